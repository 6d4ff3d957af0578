package tunnel

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// poolConn is a stream that gives its replica's count back on Close. A
// stream from Dial whose first read fails before any byte arrived was
// refused by the replica's side (a draining server no longer accepts, the
// agent or kubelet cannot reach it): the replica is left out as for a
// failed Dial. (DialEach's cancel streams end without an answer.)
type poolConn struct {
	net.Conn
	p        *Pool
	r        *replica
	answered atomic.Bool // a byte arrived, or not watched
	closing  atomic.Bool
	once     sync.Once
}

func (c *poolConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.answered.Store(true)
	} else if err != nil && !c.closing.Load() && c.answered.CompareAndSwap(false, true) {
		c.p.refused(c.r, err)
	}
	return n, err
}

func (c *poolConn) Close() error {
	c.closing.Store(true)
	err := c.Conn.Close()
	c.once.Do(func() { c.p.release(c.r, nil, false) })
	return err
}

// halfCloser is a poolConn whose stream can half-close.
type halfCloser struct{ *poolConn }

func (c *halfCloser) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

var _ Spreader = (*poolConn)(nil)

// DialBeside opens a stream to the same replica (Spreader): over another
// of its sessions when its tunnel has several, else with its Dial.
func (c *poolConn) DialBeside(ctx context.Context, i int) (net.Conn, error) {
	c.p.mu.Lock()
	c.r.live++
	c.p.mu.Unlock()
	var s net.Conn
	var err error
	if sp, ok := c.Conn.(Spreader); ok {
		s, err = sp.DialBeside(ctx, i)
	} else {
		s, err = c.r.tun.Dial(ctx)
	}
	if err != nil {
		c.p.release(c.r, nil, false)
		return nil, err
	}
	return c.p.wrap(s, c.r, false), nil
}

// Sessions is the number of sessions of the replica's tunnel (Spreader).
func (c *poolConn) Sessions() int {
	if sp, ok := c.Conn.(Spreader); ok {
		return sp.Sessions()
	}
	return 1
}

// Lane reports whether the stream crosses its tunnel's lane (Spreader).
func (c *poolConn) Lane() bool {
	sp, ok := c.Conn.(Spreader)
	return ok && sp.Lane()
}
