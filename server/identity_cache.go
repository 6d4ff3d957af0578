package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
)

// identityKey is what a verified answer is cached under: the access key,
// this server's id and a digest of the signed request (its Authorization
// and every signed header's value). The digest makes the cache safe: an
// access key id is no secret, so a request with a made-up signature never
// hits an answer STS gave for a real one; and a captured request whose
// signed headers were edited (a fresher X-Amz-Date, another session
// token) is a miss that STS refuses, never a hit on the original's answer.
type identityKey struct{ accessKey, serverID, signed string }

// signedDigest is the hex SHA-256 of r's Authorization and the values of
// the headers it signs, in its SignedHeaders order.
func signedDigest(r callerid.Request, auth callerid.Authorization) string {
	h := sha256.New()
	io.WriteString(h, r.Authorization)
	for _, name := range auth.SignedHeaders {
		fmt.Fprintf(h, "\n%s:%s", name, r.Headers[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

type identityEntry struct {
	p       *discovery.Principal
	expires time.Time
}

// identityCall is one STS call shared by concurrent verifications of
// the same request; done is closed when p and err are set.
type identityCall struct {
	done chan struct{}
	p    *discovery.Principal
	err  error
}

// identityCache keeps verified answers for ttl, at most max of them, and
// lets concurrent verifications of one request share one STS call.
// Refusals are never cached.
type identityCache struct {
	max int
	ttl time.Duration

	mu       sync.Mutex
	entries  map[identityKey]identityEntry
	inflight map[identityKey]*identityCall
}

func newIdentityCache(max int, ttl time.Duration) *identityCache {
	return &identityCache{max: max, ttl: ttl, entries: map[identityKey]identityEntry{}, inflight: map[identityKey]*identityCall{}}
}

// get returns the cached answer for k, or calls fetch (once for all
// concurrent callers) and caches its answer until now+ttl.
func (c *identityCache) get(ctx context.Context, k identityKey, now time.Time, fetch func() (*discovery.Principal, error)) (*discovery.Principal, bool, error) {
	c.mu.Lock()
	if e, ok := c.entries[k]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.p, true, nil
	}
	if call, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.p, false, call.err
		case <-ctx.Done():
			return nil, false, stsUnreachable(fmt.Errorf("wait for STS: %w", ctx.Err()))
		}
	}
	call := &identityCall{done: make(chan struct{})}
	c.inflight[k] = call
	c.mu.Unlock()
	call.err = errors.New("identity check did not return") // replaced unless fetch panics
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		if call.err == nil {
			c.store(k, identityEntry{p: call.p, expires: now.Add(c.ttl)}, now)
		}
		c.mu.Unlock()
		close(call.done)
	}()
	call.p, call.err = fetch()
	return call.p, false, call.err
}

// store adds e, first dropping expired entries and then, if still full,
// arbitrary ones. Called with mu held.
func (c *identityCache) store(k identityKey, e identityEntry, now time.Time) {
	if len(c.entries) >= c.max {
		for key, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, key)
			}
		}
	}
	for key := range c.entries {
		if len(c.entries) < c.max {
			break
		}
		delete(c.entries, key)
	}
	c.entries[k] = e
}
