package ssm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/xtaci/smux"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// streamConn is one smux stream. It hides smux's CloseWrite (the agent's
// smux v1 has no half-close, §9.3) and turns the EOF smux reports when the
// whole session dies into the session's error.
type streamConn struct {
	st          *smux.Stream
	s           *session
	connectErrs int64 // session's ConnectToPortError count at open
	gotData     bool
	t           *Tunnel
	slot        int // the tunnel's slot whose session carries it
	base        int // with slot the lane: the turn its streams beside start from
}

func (s *session) openStream(t *Tunnel, slot, base int) (net.Conn, error) {
	errs := s.connectErrors.Load() // before the SYN: the agent may answer at once
	st, err := s.mux.OpenStream()
	if err != nil {
		if !s.alive() {
			return nil, s.endedError()
		}
		return nil, fmt.Errorf("ssm session %s: open stream: %w", s.id, err)
	}
	return &streamConn{st: st, s: s, connectErrs: errs, t: t, slot: slot, base: base}, nil
}

func (c *streamConn) Read(b []byte) (int, error) {
	n, err := c.st.Read(b)
	if n > 0 {
		c.gotData = true
	}
	if err != nil {
		err = c.translate(err)
	}
	return n, err
}

func (c *streamConn) Write(b []byte) (int, error) {
	n, err := c.st.Write(b)
	if err != nil {
		err = c.translate(err)
	}
	return n, err
}

func (c *streamConn) translate(err error) error {
	if !c.s.alive() {
		return c.s.endedError()
	}
	if errors.Is(err, io.EOF) && !c.gotData && c.s.connectErrors.Load() != c.connectErrs {
		return fmt.Errorf("%w %d on the target (is the rdsproxy server listening there?)", ErrConnectToPort, c.s.p.port)
	}
	return err
}

func (c *streamConn) Close() error                       { return c.st.Close() }
func (c *streamConn) LocalAddr() net.Addr                { return c.st.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr               { return c.st.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// basicConn is the one connection of a basic-mode session (§9.4): raw bytes
// over the data channel. Close sends DisconnectToPort, waits for the agent to
// acknowledge everything, drops leftover bytes and frees the slot.
type basicConn struct {
	s    *session
	once sync.Once
}

func (s *session) dialBasic(ctx context.Context) (net.Conn, error) {
	select {
	case s.basic <- struct{}{}:
	case <-s.ch.Done():
		return nil, s.endedError()
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the basic-mode session (one connection at a time): %w", ctx.Err())
	}
	s.pipe.discard()
	return &basicConn{s: s}, nil
}

func (c *basicConn) Read(b []byte) (int, error) {
	n, err := c.s.pipe.Read(b)
	if err != nil && !c.s.alive() {
		err = c.s.endedError()
	}
	return n, err
}

func (c *basicConn) Write(b []byte) (int, error) {
	n, err := c.s.pipe.Write(b)
	if err != nil && !c.s.alive() {
		err = c.s.endedError()
	}
	return n, err
}

func (c *basicConn) Close() error {
	var err error
	c.once.Do(func() {
		s := c.s
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		if err = s.ch.SendFlag(ctx, FlagDisconnectToPort); err == nil {
			err = s.ch.WaitAcked(ctx)
		}
		if err != nil && s.alive() {
			s.fail(fmt.Errorf("basic mode: disconnect from port: %w", err))
		}
		s.pipe.discard()
		<-s.basic
		err = nil
	})
	return err
}

type basicAddr struct{}

func (basicAddr) Network() string { return "ssm" }
func (basicAddr) String() string  { return "ssm-basic" }

func (c *basicConn) LocalAddr() net.Addr  { return basicAddr{} }
func (c *basicConn) RemoteAddr() net.Addr { return basicAddr{} }
func (c *basicConn) SetDeadline(t time.Time) error {
	c.s.pipe.setDeadlines(&t, &t)
	return nil
}
func (c *basicConn) SetReadDeadline(t time.Time) error {
	c.s.pipe.setDeadlines(&t, nil)
	return nil
}
func (c *basicConn) SetWriteDeadline(t time.Time) error {
	c.s.pipe.setDeadlines(nil, &t)
	return nil
}

var _ tunnel.Spreader = (*streamConn)(nil)

// DialBeside opens a stream over the i-th bulk session after this one's
// (tunnel.Spreader), starting it if needed; it never crosses the lane.
func (c *streamConn) DialBeside(ctx context.Context, i int) (net.Conn, error) {
	return c.t.dialSlot(ctx, c.t.besideSlot(c.slot, c.base, i), 0)
}

// Sessions is the number of sessions the stream's connection can spread
// over (tunnel.Spreader): from the lane, the lane and the others; from
// another session, the others only.
func (c *streamConn) Sessions() int {
	if c.Lane() {
		return len(c.t.slots)
	}
	return c.t.bulkSlots()
}

// Lane reports whether the stream crosses the tunnel's lane (tunnel.Spreader).
func (c *streamConn) Lane() bool { return c.t.lane && c.slot == 0 }
