package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// Identities signs caller identities: sts:GetCallerIdentity requests
// bound to one server (see package callerid), encoded for the startup
// parameter rdsproxy.identity or the X-Rdsproxy-Identity header.
type Identities interface {
	// Identity returns an encoded identity for server, signed with the
	// credentials whose access key is keyID (the IAM token's), or with the
	// current credentials when keyID is empty.
	Identity(ctx context.Context, server callerid.ServerInfo, keyID string) (string, error)
}

// IdentitySigner signs identities with an AWS credentials provider, the
// same one that signs the IAM tokens, and reuses each for ReuseFor: the
// server caches what STS said about a signed request, so reusing it keeps
// STS off the connection path. It remembers the credentials it has seen
// by access key, so a token signed just before the provider rotated its
// credentials still gets an identity from the same key.
type IdentitySigner struct {
	// ReuseFor is how long one signed identity is reused (default 5m;
	// servers accept them for 15).
	ReuseFor time.Duration

	creds aws.CredentialsProvider
	now   func() time.Time

	mu     sync.Mutex
	signed map[signedKey]signedIdentity
	seen   map[string]aws.Credentials // by access key id, the latest few
}

type signedKey struct{ serverID, region, keyID string }

type signedIdentity struct {
	encoded string
	at      time.Time
}

var _ Identities = (*IdentitySigner)(nil)

// NewIdentitySigner signs with creds; now defaults to time.Now.
func NewIdentitySigner(creds aws.CredentialsProvider, now func() time.Time) *IdentitySigner {
	if now == nil {
		now = time.Now
	}
	return &IdentitySigner{ReuseFor: 5 * time.Minute, creds: creds, now: now,
		signed: map[signedKey]signedIdentity{}, seen: map[string]aws.Credentials{}}
}

// Identity implements Identities.
func (s *IdentitySigner) Identity(ctx context.Context, server callerid.ServerInfo, keyID string) (string, error) {
	now := s.now()
	k := signedKey{server.ServerID, server.Region, keyID}
	s.mu.Lock()
	if e, ok := s.signed[k]; ok && now.Sub(e.at) < s.ReuseFor && now.Sub(e.at) >= -time.Minute {
		s.mu.Unlock()
		return e.encoded, nil
	}
	s.mu.Unlock()
	creds, err := s.credentials(ctx, keyID)
	if err != nil {
		return "", err
	}
	req, err := callerid.Sign(ctx, creds, server.Region, server.ServerID, now)
	if err != nil {
		return "", err
	}
	encoded := req.Encode()
	if len(encoded) > callerid.MaxEncoded {
		return "", fmt.Errorf("caller identity: %w (the session token is %d bytes)", callerid.ErrTooLong, len(creds.SessionToken))
	}
	s.mu.Lock()
	s.signed[k] = signedIdentity{encoded: encoded, at: now}
	s.mu.Unlock()
	return encoded, nil
}

// credentials returns the credentials whose access key is keyID: the
// provider's current ones, or ones seen before that have not expired.
func (s *IdentitySigner) credentials(ctx context.Context, keyID string) (aws.Credentials, error) {
	if s.creds == nil {
		return aws.Credentials{}, errors.New("caller identity: no AWS credentials")
	}
	cur, err := s.creds.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("caller identity: retrieve AWS credentials: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remember(cur)
	if keyID == "" || cur.AccessKeyID == keyID {
		return cur, nil
	}
	if old, ok := s.seen[keyID]; ok && !old.Expired() {
		return old, nil
	}
	return aws.Credentials{}, fmt.Errorf("caller identity: the IAM token was signed with access key %s, whose credentials are gone; reconnect for a new token", keyID)
}

// remember keeps c, and at most three other credentials. Called with mu held.
func (s *IdentitySigner) remember(c aws.Credentials) {
	if _, ok := s.seen[c.AccessKeyID]; !ok && len(s.seen) >= 4 {
		for k, old := range s.seen {
			if k != c.AccessKeyID && (old.Expired() || len(s.seen) >= 4) {
				delete(s.seen, k)
			}
		}
	}
	s.seen[c.AccessKeyID] = c
}

// addIdentity adds the rdsproxy.identity parameter, signed with the
// token's access key, when the server checks identity.
func (p *Proxy) addIdentity(ctx context.Context, params pgwire.Params, token string) (pgwire.Params, error) {
	server := p.server.Load()
	if p.cfg.Identities == nil || server == nil {
		return params, nil
	}
	var keyID string
	if tok, err := iamtoken.Parse(token); err == nil && token != "" {
		keyID = tok.AccessKeyID
	}
	id, err := p.cfg.Identities.Identity(ctx, *server, keyID)
	if err != nil {
		return nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity",
			"rdsproxy: cannot sign the caller identity: %v", err).
			WithHint("Check your AWS credentials (AWS_PROFILE, `aws sso login`).")
	}
	return params.Set(callerid.Param, id), nil
}
