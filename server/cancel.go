package server

import (
	"bytes"
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
// owns key. Unknown keys are dropped silently, as PostgreSQL does.
func (s *Server) forwardCancel(ctx context.Context, key pgwire.CancelKey) {
	t, ok := s.cancels.lookup(key)
	if !ok {
		s.log.Debug("cancel request for an unknown session dropped")
		s.cfg.Metrics.cancel("dropped")
		return
	}
	s.sendCancel(ctx, t, key, "forwarded")
}

// terminate is a client's goodbye: a Terminate message.
var terminate = []byte{'X', 0, 0, 0, 4}

// cancelOrphaned cancels what up's backend runs when the client's stream
// ended with tail, not with a Terminate: the client went away (a killed
// process, a lost network, rdsproxy connect stopped) or the drain stopped
// the session, maybe in the middle of a statement, and PostgreSQL would
// run that statement to its end (a pg_sleep, a long UPDATE holding its
// locks) before noticing. A backend waiting for a command ignores a
// cancel. An empty tail (nothing sent, or a spliced copy that kept none)
// cancels nothing. It reports whether it sent a cancel.
func (s *Server) cancelOrphaned(up *upstream, tail []byte) bool {
	if len(tail) == 0 || bytes.Equal(tail, terminate) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	return s.sendCancel(ctx, up.target, up.key, "orphaned")
}

// sendCancel sends key's CancelRequest to t, over TLS when the target uses
// it, and waits for the upstream to close the connection (as libpq does)
// so that the cancel has been processed when it returns. sent labels the
// metric of a cancel sent. It reports whether the cancel was sent.
func (s *Server) sendCancel(ctx context.Context, t *discovery.Target, key pgwire.CancelKey, sent string) bool {
	conn, err := s.dialTarget(ctx, t)
	if err != nil {
		s.log.Warn("cancel request not sent", "target", t.Name, "why", sent, "err", err)
		s.cfg.Metrics.cancel("failed")
		return false
	}
	defer conn.Close()
	if err := pgwire.SendCancel(conn, key, time.Now().Add(s.cfg.DialTimeout)); err != nil {
		s.log.Warn("cancel request not sent", "target", t.Name, "why", sent, "err", err)
		s.cfg.Metrics.cancel("failed")
		return false
	}
	s.cfg.Metrics.cancel(sent)
	s.log.Debug("cancel request sent", "target", t.Name, "why", sent)
	return true
}
