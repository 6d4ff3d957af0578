package server

import (
	"context"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// checkIdentity verifies the caller identity a startup carries (when the
// server checks identity) and applies the target's principal rule. It
// runs after the token's pre-check, so an IAM token's access key must
// have signed the identity too, and it dials nothing. A failure STS
// reports is charged to the caller's failure budget, which authenticate
// checked before.
func (s *Server) checkIdentity(ctx context.Context, params pgwire.Params, t *discovery.Target, info *sessionInfo) error {
	if s.identity != nil {
		encoded, _ := params.Get(callerid.Param)
		switch {
		case encoded != "":
			p, key, err := s.identity.verify(ctx, encoded, info.keyID)
			if reasonOf(err) == "identity-refused" {
				s.failures.fail(key, info.src, time.Now())
			}
			if err != nil {
				return err
			}
			info.principal = p
		case !s.cfg.Identity.Optional:
			s.cfg.Metrics.identity("identity-missing")
			return identityMissing()
		}
	}
	if !discovery.AllowsPrincipal(t, info.principal) {
		return principalRefused(t, info.principal)
	}
	return nil
}

// The audit line's identity fields; empty without a verified identity.

func (i *sessionInfo) arn() string {
	if i.principal == nil {
		return ""
	}
	return clipARN(i.principal.ARN)
}

func (i *sessionInfo) account() string {
	if i.principal == nil {
		return ""
	}
	return i.principal.Account
}

func (i *sessionInfo) roleSession() string {
	if i.principal == nil {
		return ""
	}
	return clip(i.principal.Session)
}
