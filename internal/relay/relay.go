// Package relay is the one byte relay both proxies use once startup is
// over: bytes already read while routing are written first, then both
// directions are copied until each side has finished, with half-close
// propagated so that a client that goes away ends its upstream promptly.
//
// When both ends are *net.TCPConn, io.Copy uses splice(2) and no user-space
// buffer. Otherwise each direction borrows a pooled buffer. A Session can
// also follow the PostgreSQL message framing of the stream towards a (the
// client) so that its owner can end it with a final message written between
// two backend messages, never inside one.
//
// docs/architecture.md §5 shows where a session reaches it.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is one TLS record's worth of plaintext.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// stopWriteGrace bounds a write to a client that stops reading after Stop.
const stopWriteGrace = 2 * time.Second

// errStopped ends the copy loops after Stop.
var errStopped = errors.New("relay stopped by its owner")

// Result counts the bytes each way, including replayed bytes.
type Result struct {
	// ToB is bytes written to b (read from a plus pendingToB);
	// ToA is bytes written to a (read from b plus pendingToA).
	ToB, ToA int64
	// Err is the first error that was not a clean end of stream.
	Err error
	// Stopped is true when the owner ended the session with Stop.
	Stopped bool
}

// Options change how a Session copies.
type Options struct {
	// FrameToA: the bytes towards a are PostgreSQL backend messages.
	// Stop then writes its final message only at a message boundary.
	FrameToA bool
}

// Session relays between a and b until both directions end or Stop.
type Session struct {
	a, b     net.Conn
	opts     Options
	stopping atomic.Bool
	final    atomic.Pointer[[]byte]
}

// New prepares a session; Run starts it.
func New(a, b net.Conn, opts Options) *Session {
	return &Session{a: a, b: b, opts: opts}
}

// Relay runs a plain session: see Session.Run.
func Relay(a, b net.Conn, pendingToB, pendingToA []byte) Result {
	return New(a, b, Options{}).Run(pendingToB, pendingToA)
}

// Run writes pendingToB to b and pendingToA to a, then copies a→b and b→a
// until both directions end. When one direction reaches EOF the other side
// is half-closed (CloseWrite) so the peer sees the end too; on any error
// both connections are closed. Run closes a and b before it returns, and
// does not return before both copy goroutines have ended.
func (s *Session) Run(pendingToB, pendingToA []byte) Result {
	var res Result
	var errOnce sync.Once
	fail := func(err error) {
		if !isClosed(err) && !errors.Is(err, errStopped) && !s.stopping.Load() {
			errOnce.Do(func() { res.Err = err })
		}
		if !s.stopping.Load() { // after Stop, the b→a loop closes both
			s.a.Close()
			s.b.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pipe(s.b, s.a, pendingToB)
		res.ToB = n
		if err != nil {
			fail(err)
		}
	}()
	n, err := s.toA(pendingToA)
	res.ToA = n
	if err != nil {
		fail(err)
	}
	s.a.Close()
	s.b.Close()
	wg.Wait()
	res.Stopped = s.stopping.Load()
	return res
}

// Stop ends the session: final (e.g. a FATAL ErrorResponse) is written to
// a at the next message boundary of the b→a stream, then both sides close.
// Without FrameToA, or when the stream is not at a boundary by the time b
// goes quiet, the session closes without final. Stop does not wait.
func (s *Session) Stop(final []byte) {
	s.final.Store(&final)
	if s.stopping.Swap(true) {
		return
	}
	now := time.Now()
	s.a.SetReadDeadline(now)
	s.b.SetReadDeadline(now)
	s.a.SetWriteDeadline(now.Add(stopWriteGrace))
}

// BufferedReader is a connection that can also hand over, without
// blocking, what it has already received (a TLS connection's records,
// decrypted from what its socket holds). The copy from it then coalesces
// those bytes into one write: fewer writes and wake-ups downstream on the
// bulk path, and nothing added on the request/response path (see chunks).
type BufferedReader interface {
	ReadBuffered(p []byte) (int, error)
}

// Buffer sizes of the coalescing copy: an idle session waits with a small
// buffer of its own and borrows a large one only while bytes flow.
const (
	firstReadSize = 2 << 10
	coalesceSize  = 64 << 10
)

var coalescePool = sync.Pool{New: func() any { b := make([]byte, coalesceSize); return &b }}

// toA copies b→a; with FrameToA it follows message boundaries for Stop.
func (s *Session) toA(pending []byte) (int64, error) {
	if !s.opts.FrameToA {
		return pipe(s.a, s.b, pending)
	}
	var f framer
	var n int64
	write := func(p []byte) error {
		w, err := s.a.Write(p)
		n += int64(w)
		f.feed(p[:w])
		return err
	}
	if len(pending) > 0 {
		if err := write(pending); err != nil {
			return n, err
		}
	}
	read, done := chunks(s.b)
	defer done()
	for {
		chunk, rerr := read()
		if len(chunk) > 0 {
			if werr := write(chunk); werr != nil {
				return n, werr
			}
		}
		if s.stopping.Load() {
			if f.atBoundary() {
				s.a.Write(*s.final.Load())
			}
			return n, errStopped
		}
		if rerr == io.EOF {
			return n, closeWrite(s.a)
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// chunks returns the read step of a copy from src and what releases its
// buffers. Each step blocks for the first bytes into a small buffer; when
// they fill it and src can say what else has already arrived (moreFrom),
// the step takes that too, up to coalesceSize, so that one write carries
// it. Anything else is read through a pooled buffer.
func chunks(src net.Conn) (read func() ([]byte, error), done func()) {
	more := moreFrom(src)
	if more == nil {
		bp := bufPool.Get().(*[]byte)
		return func() ([]byte, error) {
			r, err := src.Read(*bp)
			return (*bp)[:r], err
		}, func() { bufPool.Put(bp) }
	}
	first := make([]byte, firstReadSize)
	var big *[]byte
	release := func() {
		if big != nil {
			coalescePool.Put(big)
			big = nil
		}
	}
	return func() ([]byte, error) {
		release() // the previous chunk has been written
		r, err := src.Read(first)
		if r < len(first) || err != nil {
			return first[:r], err
		}
		big = coalescePool.Get().(*[]byte)
		buf := *big
		n := copy(buf, first[:r])
		for n < len(buf) {
			m, err := more(buf[n:])
			n += m
			if err != nil {
				return buf[:n], err
			}
			if m == 0 {
				break
			}
		}
		return buf[:n], nil
	}, release
}

// pipe copies src to dst after writing pending, then half-closes dst.
func pipe(dst, src net.Conn, pending []byte) (int64, error) {
	var n int64
	if len(pending) > 0 {
		w, err := dst.Write(pending)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	c, err := copyConn(dst, src)
	n += c
	if err != nil {
		// Includes net.ErrClosed: the owner closed a connection to end
		// the session, so both directions must end now.
		return n, err
	}
	return n, closeWrite(dst)
}

// copyConn copies src to dst until EOF: splice(2) between two TCP
// connections, else coalesced chunks.
func copyConn(dst, src net.Conn) (int64, error) {
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			return d.ReadFrom(s) // splice
		}
	}
	read, done := chunks(src)
	defer done()
	var n int64
	for {
		chunk, rerr := read()
		if len(chunk) > 0 {
			w, werr := dst.Write(chunk)
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// closeWrite half-closes conn when it can, else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !isClosed(err) {
			return err
		}
		return nil
	}
	return c.Close()
}

// isClosed reports errors that only mean a connection was already closed.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
