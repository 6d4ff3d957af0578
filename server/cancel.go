package server

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/relay"
)

// cancelMap remembers the upstream of every live session by the
// BackendKeyData the upstream sent, so CancelRequests can be routed.
type cancelMap struct {
	mu sync.Mutex
	m  map[pgwire.CancelKey]cancelRoute
}

// cancelRoute is where a session's cancels go: its target, at the address
// its connection was dialed to; and the session's relay, told when one
// was sent (nil for a session that has none yet).
type cancelRoute struct {
	target *discovery.Target
	addr   string
	relay  *relay.Session
}

// asideBudget bounds the rows and notices that all sessions together set
// aside after their cancels (see relay.Session.CancelSent); a session sets
// aside at most 16 MiB of it.
const asideBudget = 64 << 20

func (c *cancelMap) add(k pgwire.CancelKey, r cancelRoute) {
	c.mu.Lock()
	c.m[k] = r
	c.mu.Unlock()
}

func (c *cancelMap) remove(k pgwire.CancelKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *cancelMap) lookup(k pgwire.CancelKey) (cancelRoute, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[k]
	return r, ok
}

// forwardCancel sends a CancelRequest to the upstream of the session that
// owns key. Unknown keys are dropped silently, as PostgreSQL does.
func (s *Server) forwardCancel(ctx context.Context, key pgwire.CancelKey) {
	r, ok := s.cancels.lookup(key)
	if !ok {
		s.log.Debug("cancel request for an unknown session dropped")
		s.cfg.Metrics.cancel(cancelDropped)
		return
	}
	// A backend waiting for a command ignores a cancel: say so in the
	// metric (a cursor read in pieces over a slow link meets this between
	// its pieces). It is sent all the same: a statement may be on its way.
	sent := cancelForwarded
	if r.relay != nil && r.relay.Idle() {
		sent = cancelForwardedIdle
	}
	if s.sendCancel(ctx, r, key, sent) && r.relay != nil {
		r.relay.CancelSent()
	}
}

// terminate is a client's goodbye: a Terminate message.
var terminate = []byte{'X', 0, 0, 0, 4}

// cancelOrphaned cancels what up's backend runs when the client's stream
// ended with tail, not with a Terminate: the client went away (a killed
// process, a lost network, rdsproxy connect stopped) or the drain stopped
// the session, maybe in the middle of a statement, and PostgreSQL would
// run that statement to its end (a pg_sleep, a long UPDATE holding its
// locks) before noticing. A backend waiting for a command (idle: it has
// answered everything the client sent) would ignore a cancel, so none is
// sent: a drain of many idle sessions dials nothing. Nor is one sent for
// an empty tail (nothing sent). It reports whether it sent a cancel.
func (s *Server) cancelOrphaned(up *upstream, tail []byte, idle bool) bool {
	if idle || len(tail) == 0 || bytes.Equal(tail, terminate) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	return s.sendCancel(ctx, up.route(), up.key, cancelOrphaned)
}

// sendCancel sends key's CancelRequest along r, over TLS when the target
// uses it, and waits for the upstream to close the connection (as libpq
// does) so that the cancel has been processed when it returns; all of it
// within ctx's deadline, else --dial-timeout twice. sent labels the metric
// of a cancel sent. It reports whether the cancel was sent.
func (s *Server) sendCancel(ctx context.Context, r cancelRoute, key pgwire.CancelKey, sent string) bool {
	t := r.target
	conn, err := s.dialTargetAt(ctx, t, r.addr)
	if err != nil {
		s.log.Warn("cancel request not sent", "target", t.Name, "why", sent, "err", err)
		s.cfg.Metrics.cancel(cancelFailed)
		return false
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.cfg.DialTimeout)
	}
	if err := pgwire.SendCancel(conn, key, deadline); err != nil {
		s.log.Warn("cancel request not sent", "target", t.Name, "why", sent, "err", err)
		s.cfg.Metrics.cancel(cancelFailed)
		return false
	}
	s.cfg.Metrics.cancel(sent)
	s.log.Debug("cancel request sent", "target", t.Name, "why", sent)
	return true
}
