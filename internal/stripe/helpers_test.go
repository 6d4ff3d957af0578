package stripe

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPairs returns k connected loopback TCP pairs.
func tcpPairs(t testing.TB, k int) (a, b []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range k {
		ca, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cb, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		a, b = append(a, ca), append(b, cb)
	}
	return a, b
}

// newPair joins the k stripes of a and b into two Conns.
func newPair(t testing.TB, a, b []net.Conn, oa, ob Options) (*Conn, *Conn) {
	t.Helper()
	ca, cb := New(a[0], oa), New(b[0], ob)
	for i := 1; i < len(a); i++ {
		if err := ca.Add(a[i]); err != nil {
			t.Fatal(err)
		}
		if err := cb.Add(b[i]); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func newCodec(t testing.TB) *Codec {
	t.Helper()
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// slowWriter sleeps before every Write, as a slow link would.
type slowWriter struct {
	net.Conn
	delay time.Duration
}

func (c slowWriter) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(p)
}

// slowReader reads at most 1 KiB then sleeps 1 ms, like the SSM agent.
type slowReader struct{ net.Conn }

func (c slowReader) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p[:min(len(p), 1024)])
	time.Sleep(time.Millisecond)
	return n, err
}

// countReader counts the bytes read through it.
type countReader struct {
	net.Conn
	n *atomic.Int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func textData(n int) []byte {
	b := make([]byte, 0, n+100)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "row %d\tcustomer-%d\tthe quick brown fox jumps over the lazy dog\t%d\n", i, i%977, i*31)
	}
	return b[:n]
}

// writeAll writes data in pieces of varying size, then half-closes.
func writeAll(c *Conn, data []byte, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(100<<10))
		if _, err := c.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return c.CloseWrite()
}

// readSum reads c to EOF and returns the SHA-256 of what it read.
func readSum(c *Conn) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// waitFor polls cond until it holds or the timeout passes (for state that
// no channel announces).
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate is a stripe whose writes wait until Open (or Close): a stalled link.
type gate struct {
	net.Conn
	open, closed chan struct{}
	openOnce     sync.Once
	closeOnce    sync.Once
}

func newGate(c net.Conn) *gate {
	return &gate{Conn: c, open: make(chan struct{}), closed: make(chan struct{})}
}

func (g *gate) Open() { g.openOnce.Do(func() { close(g.open) }) }

func (g *gate) Write(p []byte) (int, error) {
	select {
	case <-g.open:
		return g.Conn.Write(p)
	case <-g.closed:
		return 0, net.ErrClosed
	}
}

func (g *gate) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// session models one smux v1 session over SSM carrying several streams: in
// each direction, the bytes that have arrived but that their stream has not
// read yet share one buffer of size bytes. When it is full the session
// delivers nothing more, to any of its streams, until some stream reads.
type session struct {
	mu     sync.Mutex
	cond   *sync.Cond
	size   int
	unread [2]int // bytes buffered for the streams' ends on side 0 and side 1
}

func newSession(size int) *session {
	s := &session{size: size}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// stream opens a stream on s and returns its two ends (sides 0 and 1).
func (s *session) stream() (net.Conn, net.Conn) {
	a, b := &sessionEnd{s: s, side: 0}, &sessionEnd{s: s, side: 1}
	a.peer, b.peer = b, a
	return a, b
}

// sessionEnd is one end of a session's stream. Deadlines are not modelled:
// the stripe package never sets them on its stripes.
type sessionEnd struct {
	s      *session
	side   int
	peer   *sessionEnd
	buf    []byte // arrived, not read yet; guarded by s.mu
	closed bool
}

func (e *sessionEnd) Write(p []byte) (int, error) {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(p) {
		for !e.closed && !e.peer.closed && s.unread[e.peer.side] >= s.size {
			s.cond.Wait()
		}
		if e.closed {
			return n, net.ErrClosed
		}
		if e.peer.closed {
			return n, io.ErrClosedPipe
		}
		k := min(len(p)-n, s.size-s.unread[e.peer.side])
		e.peer.buf = append(e.peer.buf, p[n:n+k]...)
		s.unread[e.peer.side] += k
		n += k
		s.cond.Broadcast()
	}
	return n, nil
}

func (e *sessionEnd) Read(p []byte) (int, error) {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for !e.closed && len(e.buf) == 0 && !e.peer.closed {
		s.cond.Wait()
	}
	switch {
	case e.closed:
		return 0, net.ErrClosed
	case len(e.buf) == 0:
		return 0, io.EOF
	}
	n := copy(p, e.buf)
	e.buf = e.buf[n:]
	s.unread[e.side] -= n
	s.cond.Broadcast()
	return n, nil
}

// Close ends the stream; what this end had not read frees the session.
func (e *sessionEnd) Close() error {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !e.closed {
		e.closed = true
		s.unread[e.side] -= len(e.buf)
		e.buf = nil
		s.cond.Broadcast()
	}
	return nil
}

func (e *sessionEnd) LocalAddr() net.Addr              { return sessionAddr{} }
func (e *sessionEnd) RemoteAddr() net.Addr             { return sessionAddr{} }
func (e *sessionEnd) SetDeadline(time.Time) error      { return nil }
func (e *sessionEnd) SetReadDeadline(time.Time) error  { return nil }
func (e *sessionEnd) SetWriteDeadline(time.Time) error { return nil }

type sessionAddr struct{}

func (sessionAddr) Network() string { return "session" }
func (sessionAddr) String() string  { return "session" }
