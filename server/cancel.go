package server

import (
	"context"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// cancelMap remembers the upstream of every live session by the
// BackendKeyData the upstream sent, so CancelRequests can be routed.
type cancelMap struct {
	mu sync.Mutex
	m  map[pgwire.CancelKey]*discovery.Target
}

func (c *cancelMap) add(k pgwire.CancelKey, t *discovery.Target) {
	c.mu.Lock()
	c.m[k] = t
	c.mu.Unlock()
}

func (c *cancelMap) remove(k pgwire.CancelKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *cancelMap) lookup(k pgwire.CancelKey) (*discovery.Target, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[k]
	return t, ok
}

// forwardCancel sends a CancelRequest to the upstream of the session that
// owns key, over TLS when the target uses it, and waits for the upstream
// to close the connection (as libpq does) so that the cancel has been
// processed when the client's connection closes. Unknown keys are dropped
// silently, as PostgreSQL does.
func (s *Server) forwardCancel(ctx context.Context, key pgwire.CancelKey) {
	t, ok := s.cancels.lookup(key)
	if !ok {
		s.log.Debug("cancel request for an unknown session dropped")
		s.cfg.Metrics.cancel("dropped")
		return
	}
	conn, err := s.dialTarget(ctx, t)
	if err != nil {
		s.log.Warn("cancel request not forwarded", "target", t.Name, "err", err)
		s.cfg.Metrics.cancel("failed")
		return
	}
	defer conn.Close()
	if err := pgwire.SendCancel(conn, key, time.Now().Add(s.cfg.DialTimeout)); err != nil {
		s.log.Warn("cancel request not forwarded", "target", t.Name, "err", err)
		s.cfg.Metrics.cancel("failed")
		return
	}
	s.cfg.Metrics.cancel("forwarded")
	s.log.Debug("cancel request forwarded", "target", t.Name)
}
