package server

import (
	"context"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/relay"
)

// admission is what let a running session in. Each new snapshot checks
// it again: a session the operator's policy no longer admits (the tag
// rules, the target's users or principals) ends, as a new one would be
// refused. A database withheld for its state (stopped, rebooting, IAM
// authentication off) or gone keeps its sessions: whether they go on is
// the database's business, and a status rdsproxy does not know must not
// cut sessions that work.
type admission struct {
	remote    string // the client's address, for the log line of a revocation
	target    *discovery.Target
	user      string
	principal *discovery.Principal
	checked   *discovery.Snapshot // the snapshot it was last checked against; guarded by Server.mu
	revoked   string              // why revoke ended it; guarded by Server.mu
}

// refusedBy returns why snap no longer admits the session, or "". It
// follows the session's database, not its target's name: a name can move
// to another database (a blue/green switch, a collision resolved once a
// namesake is deleted), and the rules are that database's.
func (a *admission) refusedBy(snap *discovery.Snapshot) string {
	t, why, ok := snap.Standing(a.target)
	switch {
	case t == nil && ok && why.ByRules:
		if a.target.Source == discovery.SourceStatic {
			return "the target is no longer configured"
		}
		return "the tag rules no longer admit the target"
	case t == nil: // withheld for its state, or deleted: the database's business
		return ""
	case !t.AllowsUser(a.user):
		return "its database user is no longer among the target's users"
	case !discovery.AllowsPrincipal(t, a.principal):
		return "its caller is no longer among the target's principals"
	}
	return ""
}

// admissionCheckEvery is how often the server looks for a new snapshot to
// check running sessions against. Refreshes come a minute or more apart.
const admissionCheckEvery = time.Second

// watchAdmissions checks the running sessions against each new snapshot
// until ctx ends.
func (s *Server) watchAdmissions(ctx context.Context) {
	t := time.NewTicker(admissionCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if snap := s.cfg.Targets.Current(); snap != nil {
			s.revoke(snap)
		}
	}
}

// revoke ends, with FATAL 57P01 at a message boundary, the sessions that
// snap no longer admits; each was admitted by an earlier snapshot.
func (s *Server) revoke(snap *discovery.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r, a := range s.relays {
		if a.checked == snap || a.revoked != "" {
			continue
		}
		a.checked = snap
		if a.revoked = a.refusedBy(snap); a.revoked != "" {
			s.log.Warn("ending a session its target no longer admits", "remote", a.remote, "target", a.target.Name,
				"user", clip(a.user), "why", a.revoked)
			r.Stop(revokedError(a.target.Name, a.revoked).AppendTo(nil))
		}
	}
}

func revokedError(target, why string) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeAdminShutdown, contract.ReasonRevoked,
		"rdsproxy: terminating connection: target %q no longer admits this session (%s)", target, why).
		WithHint("The operator changed the target's tags or the server's configuration; `rdsproxy list` shows what this server serves now.")
}

// revokedWhy returns why revoke ended r's session, or "".
func (s *Server) revokedWhy(r *relay.Session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.relays[r]; a != nil {
		return a.revoked
	}
	return ""
}
