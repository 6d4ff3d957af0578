package iamtoken

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultRefreshBefore is how long before expiry a cached token is replaced.
const DefaultRefreshBefore = 5 * time.Minute

// BuildFunc signs a new token, typically Build with a credentials provider.
type BuildFunc func(ctx context.Context, endpoint, region, user string) (string, error)

// Cache reuses one token per (endpoint, region, user) until RefreshBefore
// before it expires. RDS accepts a token any number of times while it is
// valid, and AWS throttles bursts of IAM authentications, so a client signs
// once for many connections. Concurrent Gets for one key share one build.
// Errors are never cached.
type Cache struct {
	// RefreshBefore may be set before the first Get.
	RefreshBefore time.Duration

	build BuildFunc
	now   func() time.Time

	mu       sync.Mutex
	tokens   map[cacheKey]cached
	inflight map[cacheKey]*buildCall
}

type cacheKey struct{ endpoint, region, user string }

type cached struct {
	token   string
	expires time.Time
}

// buildCall is one build shared by concurrent Gets; done is closed when
// token and err are set.
type buildCall struct {
	done    chan struct{}
	token   string
	err     error
	waiters int // Gets waiting on done; guarded by Cache.mu
}

// NewCache returns a Cache that signs with build; now defaults to time.Now.
func NewCache(build BuildFunc, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{
		RefreshBefore: DefaultRefreshBefore,
		build:         build,
		now:           now,
		tokens:        make(map[cacheKey]cached),
		inflight:      make(map[cacheKey]*buildCall),
	}
}

// Get returns a cached token that stays valid for at least RefreshBefore, or
// builds one. A waiter whose leader was cancelled builds again with its own
// context rather than inheriting the leader's cancellation.
func (c *Cache) Get(ctx context.Context, endpoint, region, user string) (string, error) {
	k := cacheKey{endpoint, region, user}
	for {
		call, leader, tok := c.lookup(k)
		if tok != "" {
			return tok, nil
		}
		if leader {
			return c.lead(ctx, k, call)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for rds auth token for %s: %w", endpoint, ctx.Err())
		case <-call.done:
		}
		if call.err == nil {
			return call.token, nil
		}
		if !isContextErr(call.err) || ctx.Err() != nil {
			return "", call.err
		}
	}
}

// lookup returns a fresh cached token, or the build call to wait for, or a
// new call this caller must lead.
func (c *Cache) lookup(k cacheKey) (*buildCall, bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[k]; ok && c.now().Add(c.RefreshBefore).Before(t.expires) {
		return nil, false, t.token
	}
	if call, ok := c.inflight[k]; ok {
		call.waiters++
		return call, false, ""
	}
	call := &buildCall{done: make(chan struct{})}
	c.inflight[k] = call
	return call, true, ""
}

func (c *Cache) lead(ctx context.Context, k cacheKey, call *buildCall) (string, error) {
	call.err = errors.New("rds auth token build did not return") // replaced unless build panics
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		if call.err == nil {
			c.store(k, call.token)
		}
		c.mu.Unlock()
		close(call.done)
	}()
	call.token, call.err = c.build(ctx, k.endpoint, k.region, k.user)
	return call.token, call.err
}

// store caches tok under k when its expiry can be read, and drops entries
// that have expired so the map stays as small as the set of live keys.
// c.mu must be held.
func (c *Cache) store(k cacheKey, tok string) {
	now := c.now()
	for key, t := range c.tokens {
		if !now.Before(t.expires) {
			delete(c.tokens, key)
		}
	}
	if t, err := Parse(tok); err == nil {
		c.tokens[k] = cached{token: tok, expires: t.Expires()}
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
