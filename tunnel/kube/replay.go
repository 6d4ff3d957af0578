package kube

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxReplay bounds what a stream keeps of what it wrote before the
	// server's first byte; past it the stream cannot move (a PostgreSQL
	// startup or SSLRequest is far smaller).
	maxReplay = 64 << 10
	// maxMoves bounds how often one stream moves to another pod.
	maxMoves = 2
)

// refused reports a stream whose bytes never reached a server: the kubelet
// could not connect to the port inside the pod (the server there stopped
// listening: it drains after SIGTERM, or it is gone). The kubelet (and our
// fake) says "connection refused" on the error stream.
func refused(err error) bool {
	var se *StreamError
	return errors.As(err, &se) && strings.Contains(se.Message, "connection refused")
}

// replayConn is a stream that can move to another pod until the server's
// first byte. A pod whose server is draining is still listed until the next
// resolve, and the kubelet sends SIGTERM as soon as the pod is marked for
// deletion, so a new stream may land on a server that no longer accepts. No
// byte reached a server then, so the stream is opened again through dial
// (the pool, which by then leaves that pod out) and what was written is
// written again. Once a byte has been read the stream is the inner one.
type replayConn struct {
	dial    func(context.Context) (net.Conn, error)
	life    context.Context // the tunnel's: ends with Close
	timeout time.Duration
	onMove  func(from, to net.Conn, err error)

	confirmed atomic.Bool // a byte was read, or the read side ended: conn is final

	mu          sync.Mutex // until confirmed: conn and what replays
	conn        net.Conn
	sent        []byte
	overflow    bool // wrote more than maxReplay
	closedWrite bool
	rd, wd      time.Time
	moves       int
	closed      bool
}

// current is the stream in use.
func (r *replayConn) current() net.Conn {
	if r.confirmed.Load() {
		return r.conn // final since confirmed was stored
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

func (r *replayConn) Read(p []byte) (int, error) {
	for {
		if r.confirmed.Load() {
			return r.conn.Read(p)
		}
		c := r.current()
		n, err := c.Read(p)
		switch {
		case n == 0 && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)):
			return 0, err // nothing decided yet
		case n == 0 && refused(err) && r.move(c, err):
			continue // moved: read the new stream
		}
		// A byte, or how the stream ended: either way it stays as it is,
		// and writes see its own errors from now on.
		r.mu.Lock()
		r.sent = nil
		r.confirmed.Store(true)
		r.mu.Unlock()
		return n, err
	}
}

func (r *replayConn) Write(p []byte) (int, error) {
	if r.confirmed.Load() {
		return r.conn.Write(p)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.overflow && len(r.sent)+len(p) <= maxReplay {
		r.sent = append(r.sent, p...)
	} else {
		r.overflow, r.sent = true, nil
	}
	c := r.conn
	n, err := c.Write(p)
	switch {
	case err == nil:
		return n, nil
	case refused(err) && r.moveLocked(c, err):
		return len(p), nil // replayed, p included
	case r.heldBack(err):
		return len(p), nil
	}
	return n, err
}

// heldBack reports whether a write error before the server's first byte
// is left to the reader: a refused stream may end with a bare "closed
// stream" on the write side before its error stream has said why, and the
// reader, which learns why, moves the stream with these bytes. Not once
// the bytes cannot be replayed, nor for a deadline or our own Close.
func (r *replayConn) heldBack(err error) bool {
	return !r.overflow && !r.closed && r.moves < maxMoves &&
		!errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed)
}

// move opens the stream again elsewhere and replays it, unless it moved
// meanwhile (then the caller just retries), was closed, wrote too much or
// moved too often.
func (r *replayConn) move(from net.Conn, why error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != from {
		return true
	}
	return r.moveLocked(from, why)
}

func (r *replayConn) moveLocked(from net.Conn, why error) bool {
	if r.closed || r.overflow || r.moves >= maxMoves {
		return false
	}
	r.moves++
	ctx, cancel := context.WithTimeout(r.life, r.timeout)
	defer cancel()
	to, err := r.dial(ctx)
	if err != nil {
		return false
	}
	to.SetReadDeadline(r.rd)
	to.SetWriteDeadline(r.wd)
	if _, err := to.Write(r.sent); err != nil {
		to.Close()
		return false
	}
	if r.closedWrite {
		if err := closeWrite(to); err != nil {
			to.Close()
			return false
		}
	}
	from.Close()
	r.conn = to
	if r.onMove != nil {
		r.onMove(from, to, why)
	}
	return true
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("kube: the stream cannot half-close")
}

// CloseWrite half-closes the stream (and its replay).
func (r *replayConn) CloseWrite() error {
	if r.confirmed.Load() {
		return closeWrite(r.conn)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closedWrite = true
	if err := closeWrite(r.conn); err != nil && !r.heldBack(err) {
		return err
	}
	return nil
}

func (r *replayConn) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.conn.Close()
}

func (r *replayConn) LocalAddr() net.Addr  { return r.current().LocalAddr() }
func (r *replayConn) RemoteAddr() net.Addr { return r.current().RemoteAddr() }

func (r *replayConn) SetDeadline(t time.Time) error {
	r.SetReadDeadline(t)
	return r.SetWriteDeadline(t)
}

func (r *replayConn) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rd = t
	return r.conn.SetReadDeadline(t)
}

func (r *replayConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wd = t
	return r.conn.SetWriteDeadline(t)
}
