package stripe

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdsproxy/rdsproxy/internal/leakcheck"
)

// throttle wraps the far ends so that the four stripes run at different
// speeds: stripe 2 sleeps before each write, stripe 3 reads like the SSM
// agent, stripes 1 and 4 are plain loopback TCP.
func throttle(a, b []net.Conn) {
	a[1] = slowWriter{a[1], time.Millisecond}
	b[1] = slowWriter{b[1], 2 * time.Millisecond}
	b[2] = slowReader{b[2]}
	a[2] = slowReader{a[2]}
}

func TestRoundTripThrottled(t *testing.T) {
	const size = 20 << 20
	codec := newCodec(t)
	opts := Options{Codec: codec, Compress: true}
	cases := []struct {
		name   string
		ab, ba []byte
		check  func(t *testing.T, s Stats)
	}{
		{"random", randomData(size, 1), randomData(size, 2), func(t *testing.T, s Stats) {
			if s.Compressed != 0 || s.Raw < size/(32<<10) {
				t.Errorf("random data: %d frames compressed, %d raw", s.Compressed, s.Raw)
			}
			if float64(s.WireOut) > float64(s.BytesOut)*1.01 {
				t.Errorf("random data: %d bytes on the wire for %d", s.WireOut, s.BytesOut)
			}
		}},
		{"text", textData(size), textData(size + 1), func(t *testing.T, s Stats) {
			if s.Compressed == 0 || s.WireOut > s.BytesOut/3 {
				t.Errorf("text: %d frames compressed, %d bytes on the wire for %d", s.Compressed, s.WireOut, s.BytesOut)
			}
		}},
	}
	var wg sync.WaitGroup
	for i, tc := range cases {
		a, b := tcpPairs(t, 4)
		throttle(a, b)
		ca, cb := newPair(t, a, b, opts, opts)
		for j, dir := range []struct {
			w, r *Conn
			data []byte
		}{{ca, cb, tc.ab}, {cb, ca, tc.ba}} {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := writeAll(dir.w, dir.data, uint64(10*i+j)); err != nil {
					t.Errorf("%s: write: %v", tc.name, err)
				}
			}()
			go func() {
				defer wg.Done()
				sum, n, err := readSum(dir.r)
				if err != nil || n != int64(len(dir.data)) || sum != sha256.Sum256(dir.data) {
					t.Errorf("%s direction %d: read %d bytes of %d, err %v, checksum match %v",
						tc.name, j, n, len(dir.data), err, sum == sha256.Sum256(dir.data))
				}
			}()
		}
		t.Cleanup(func() {
			for _, c := range []*Conn{ca, cb} {
				s := c.Stats()
				t.Logf("%s: %+v", tc.name, s)
				if s.BytesOut != size && s.BytesOut != size+1 {
					t.Errorf("%s: BytesOut %d", tc.name, s.BytesOut)
				}
				tc.check(t, s)
			}
		})
	}
	wg.Wait()
}

func TestPingPong(t *testing.T) {
	const rounds = 10000
	a, b := tcpPairs(t, 4)
	opts := Options{Codec: newCodec(t), Compress: true}
	client, server := newPair(t, a, b, opts, opts)
	go func() { // echo each message reversed, until EOF
		buf := make([]byte, 256)
		for {
			if _, err := io.ReadFull(server, buf[:1]); err != nil {
				server.CloseWrite()
				return
			}
			msg := buf[1 : 1+int(buf[0])]
			if _, err := io.ReadFull(server, msg); err != nil {
				return
			}
			for i, j := 0, len(msg)-1; i < j; i, j = i+1, j-1 {
				msg[i], msg[j] = msg[j], msg[i]
			}
			if _, err := server.Write(buf[:1+len(msg)]); err != nil {
				return
			}
		}
	}()
	r := rand.New(rand.NewPCG(3, 3))
	out, in := make([]byte, 256), make([]byte, 256)
	for i := range rounds {
		n := 20 + r.IntN(181)
		out[0] = byte(n)
		msg := fmt.Appendf(out[1:1], "message %d ", i)
		for len(msg) < n {
			msg = append(msg, byte('a'+r.IntN(26)))
		}
		if _, err := client.Write(out[:1+n]); err != nil {
			t.Fatalf("round %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(client, in[:1+n]); err != nil {
			t.Fatalf("round %d: read: %v", i, err)
		}
		for k := 0; k < n; k++ {
			if in[1+k] != out[n-k] || in[0] != out[0] {
				t.Fatalf("round %d: sent %q, got back %q", i, out[1:1+n], in[1:1+n])
			}
		}
	}
	client.CloseWrite()
	if n, err := client.Read(in); n != 0 || err != io.EOF {
		t.Fatalf("after the last round: %d bytes, %v; want EOF", n, err)
	}
	client.Close() // waits for the writers, which count frames after writing them
	if s := client.Stats(); s.FramesOut != rounds+1 || s.FramesIn != rounds+1 {
		t.Errorf("frames out %d in %d, want %d each", s.FramesOut, s.FramesIn, rounds+1)
	}
}

func TestAddMidTransfer(t *testing.T) {
	const size = 8 << 20
	a, b := tcpPairs(t, 2)
	var joined atomic.Int64
	a[0] = slowWriter{a[0], time.Millisecond} // the first stripe is slow
	b[1] = countReader{b[1], &joined}
	ca, cb := New(a[0], Options{}), New(b[0], Options{})
	t.Cleanup(func() { ca.Close(); cb.Close() })
	data := randomData(size, 4)
	go writeAll(ca, data, 4)

	got := make([]byte, size)
	if _, err := io.ReadFull(cb, got[:1<<20]); err != nil {
		t.Fatal(err)
	}
	if err := cb.Add(b[1]); err != nil {
		t.Fatal(err)
	}
	if err := ca.Add(a[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cb, got[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data differs")
	}
	if joined.Load() == 0 || ca.Stripes() != 2 || cb.Stats().Stripes != 2 {
		t.Fatalf("the stripe added carried %d bytes; stripes %d and %d", joined.Load(), ca.Stripes(), cb.Stripes())
	}
	t.Logf("the stripe added carried %d of %d bytes", joined.Load(), size)
}

func TestHalfClose(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 2)
	ca, cb := New(a[0], Options{}), New(b[0], Options{})
	ca.Add(a[1])
	cb.Add(b[1])
	req, resp := randomData(1<<20, 5), randomData(100<<10, 6)
	if err := writeAll(ca, req, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	got, err := io.ReadAll(cb)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("B read %d bytes of %d, %v", len(got), len(req), err)
	}
	if err := writeAll(cb, resp, 6); err != nil {
		t.Fatalf("B writes back after A's CloseWrite: %v", err)
	}
	got, err = io.ReadAll(ca)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("A read %d bytes of %d, %v", len(got), len(resp), err)
	}
	ca.Close()
	// Both directions ended: A closing its stripes is no failure for B.
	if n, err := cb.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("B read after A closed: %d, %v; want EOF", n, err)
	}
	cb.Close()
	if err := cb.Close(); err != nil {
		t.Error(err)
	}
	if _, err := cb.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestStripeLost(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 4)
	rawB := b[2]
	ca, cb := newPair(t, a, b, Options{}, Options{})
	started := make(chan struct{}, 2)
	errs := make(chan error, 4)
	for _, c := range []*Conn{ca, cb} {
		go func() { // write until the Conn fails
			buf := randomData(64<<10, 7)
			for {
				if _, err := c.Write(buf); err != nil {
					errs <- fmt.Errorf("write: %w", err)
					return
				}
			}
		}()
		go func() { // read until the Conn fails
			buf := make([]byte, 64<<10)
			total := 0
			for {
				n, err := c.Read(buf)
				if total += n; total >= 1<<20 && total-n < 1<<20 {
					started <- struct{}{}
				}
				if err != nil {
					errs <- fmt.Errorf("read: %w", err)
					return
				}
			}
		}()
	}
	<-started
	<-started
	rawB.Close() // B's end of the third stripe goes away abruptly
	for range 4 {
		err := <-errs
		if !errors.Is(err, ErrStripeLost) || !strings.Contains(err.Error(), " of 4 lost: ") {
			t.Errorf("want ErrStripeLost naming the stripe, got %v", err)
		}
		t.Log(err)
	}
	_, err := cb.Read(make([]byte, 1))
	if !regexp.MustCompile(`stripe [1-4] of 4 lost: `).MatchString(fmt.Sprint(err)) {
		t.Errorf("B's error does not name a stripe: %v", err)
	}
	ca.Close()
	cb.Close()
}

// netTimeout reports whether err is a deadline error as net reports one.
func netTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestDeadlines(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	p1, p2 := net.Pipe()
	ca, cb := New(p1, Options{}), New(p2, Options{})
	defer cb.Close()
	defer ca.Close()

	readErr := make(chan error)
	go func() {
		_, err := ca.Read(make([]byte, 10))
		readErr <- err
	}()
	waitFor(t, "Read to block", 5*time.Second, func() bool { return len(ca.recv.sem) == 1 })
	ca.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-readErr:
		if err, ok := err.(net.Error); !ok || !err.Timeout() || !netTimeout(err) {
			t.Fatalf("blocked Read woken by a past deadline returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline in the past did not wake the blocked Read")
	}

	ca.SetReadDeadline(time.Time{})
	cb.Write([]byte("hello"))
	buf := make([]byte, 10)
	if n, err := ca.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read after clearing the deadline: %q, %v", buf[:n], err)
	}
	start := time.Now()
	ca.SetReadDeadline(start.Add(50 * time.Millisecond))
	if _, err := ca.Read(buf); !netTimeout(err) || time.Since(start) < 40*time.Millisecond {
		t.Fatalf("Read with a 50 ms deadline: %v after %v", err, time.Since(start))
	}
}

func TestWriteDeadlineAndClose(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	p1, p2 := net.Pipe() // nobody reads p2
	defer p2.Close()
	c := New(p1, Options{QueueBytes: 64 << 10, Linger: time.Millisecond}) // its Close need not wait
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	data := make([]byte, 1<<20)
	n, err := c.Write(data)
	if !netTimeout(err) || n >= len(data) {
		t.Fatalf("Write to a peer that does not read: %d bytes, %v", n, err)
	}
	c.SetWriteDeadline(time.Time{})
	errs := make(chan error, 2)
	go func() { _, err := c.Write(data); errs <- err }()
	go func() { _, err := c.Read(data); errs <- err }()
	waitFor(t, "Read and Write to block", 5*time.Second, func() bool {
		return len(c.recv.sem) == 1 && len(c.send.sem) == 1
	})
	c.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked call woken by Close: %v", err)
		}
	}
	if _, err := c.Write(data); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}

	// Close lingers for queued frames, unless the write deadline has passed.
	// A minute's linger, so that the bound leaves room for a loaded machine.
	p3, p4 := net.Pipe() // nobody reads p4
	defer p4.Close()
	c = New(p3, Options{Linger: time.Minute})
	if _, err := c.Write(data[:10<<10]); err != nil {
		t.Fatal(err)
	}
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Close after a past write deadline took %v, as if it lingered", d)
	}
	// Without a deadline it waits its linger, then drops what is queued.
	p5, p6 := net.Pipe() // nobody reads p6
	defer p6.Close()
	const linger = 3 * time.Second // above the 2 s default: a Close that ignored Options.Linger returns before it
	c = New(p5, Options{Linger: linger})
	if _, err := c.Write(data[:10<<10]); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c.Close()
	if d := time.Since(start); d < linger {
		t.Errorf("Close with frames queued and nobody reading returned after %v, before its %v linger", d, linger)
	}
}

// TestWindowBound stalls A's first stripe towards B (it carries seq 0)
// while B's application does not read. B still reads its other stripe to
// the end: A's writer there empties its queue, over a synchronous pipe. B
// holds at most Window bytes out of order and A's Write blocks until its
// deadline. Once the stall ends, everything arrives in order.
func TestWindowBound(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	const window = 256 << 10
	a1, b1 := net.Pipe()
	a2, b2 := net.Pipe()
	stalled := newGate(a1)
	opts := Options{Window: window}
	ca, cb := newPair(t, []net.Conn{stalled, a2}, []net.Conn{b1, b2}, opts, opts)
	data := randomData(3*window, 10)

	ca.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := ca.Write(data)
	if !netTimeout(err) || n > window || n < window/2 {
		t.Fatalf("Write of 3 windows to a Conn that does not read: %d bytes, %v; want a timeout after %d-%d bytes", n, err, window/2, window)
	}
	waitFor(t, "B to read all of stripe 2", 5*time.Second, func() bool {
		ca.send.mu.Lock()
		defer ca.send.mu.Unlock()
		return ca.send.stripes[1].queued == 0
	})
	ca.send.mu.Lock()
	onStalled := ca.send.stripes[0].queued
	ca.send.mu.Unlock()
	cb.recv.mu.Lock()
	held, ready, maxBuf := cb.recv.heldLen, cb.recv.readyLen, cb.recv.maxBuf
	cb.recv.mu.Unlock()
	if ready != 0 || held+onStalled < n || held > window {
		t.Fatalf("A wrote %d bytes, %d stuck on stripe 1; B holds %d out of order, %d in order: %s", n, onStalled, held, ready, &cb.recv)
	}

	stalled.Open()
	ca.SetWriteDeadline(time.Time{})
	wrote := make(chan error, 1)
	go func() { wrote <- writeAll(ca, data[n:], 10) }()
	got, err := io.ReadAll(cb)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes of %d (equal %v), %v", len(got), len(data), bytes.Equal(got, data), err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	cb.recv.mu.Lock()
	maxBuf = max(maxBuf, cb.recv.maxBuf)
	cb.recv.mu.Unlock()
	sa, sb := ca.Stats(), cb.Stats()
	ca.send.mu.Lock()
	credit := ca.send.credit
	ca.send.mu.Unlock()
	t.Logf("B buffered at most %d bytes (window %d); credits %d sent, %d received, for %d bytes", maxBuf, window, sb.CreditsOut, sa.CreditsIn, credit)
	// A could send the last byte only with credit for all but a window.
	if maxBuf > window || credit < uint64(len(data)-window) || sa.CreditsIn != sb.CreditsOut || sa.FramesIn != 0 {
		t.Errorf("B buffered up to %d bytes (window %d); B sent %d credits, A received %d, for %d bytes; A received %d frames",
			maxBuf, window, sb.CreditsOut, sa.CreditsIn, credit, sa.FramesIn)
	}
	ca.Close()
	cb.Close()
}

// TestSharedSessions: the stripes of two connections A and B share two
// sessions that stop delivering to all their streams once the bytes unread
// by any one stream fill the session's buffer, as smux v1 over SSM does. A's
// application does not read; B still moves many times the window and the
// sessions' buffers in both directions, because A's stripe readers never
// stop reading and A's sender stops at the window. Then A's data arrives.
func TestSharedSessions(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	const window, sessionBuf = 256 << 10, 64 << 10
	s1, s2 := newSession(sessionBuf), newSession(sessionBuf)
	var near, far [2][]net.Conn // [A, B] ends
	for i := range 2 {
		for _, s := range []*session{s1, s2} {
			n, f := s.stream()
			near[i], far[i] = append(near[i], n), append(far[i], f)
		}
	}
	opts := Options{Window: window}
	a1, a2 := newPair(t, near[0], far[0], opts, opts)
	b1, b2 := newPair(t, near[1], far[1], opts, opts)
	dataA, dataB := randomData(8*window, 11), textData(16*window)

	wrote := make(chan error, 3)
	go func() { wrote <- writeAll(a1, dataA, 11) }()
	go func() { wrote <- writeAll(b1, dataB, 12) }()
	go func() { wrote <- writeAll(b2, dataB, 13) }()
	type result struct {
		got []byte
		err error
	}
	readB := make(chan result, 2)
	for _, c := range []*Conn{b1, b2} {
		go func() {
			got, err := io.ReadAll(c)
			readB <- result{got, err}
		}()
	}
	for range 2 {
		select {
		case r := <-readB:
			if r.err != nil || !bytes.Equal(r.got, dataB) {
				t.Fatalf("B read %d bytes of %d, %v", len(r.got), len(dataB), r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("B stalled while A's application does not read; A: %s", &a2.recv)
		}
	}
	if got, err := io.ReadAll(a2); err != nil || !bytes.Equal(got, dataA) {
		t.Fatalf("A read %d bytes of %d, %v", len(got), len(dataA), err)
	}
	for range 3 {
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*Conn{a1, a2, b1, b2} {
		c.Close()
	}
}

// TestHostilePeer: a peer that ignores the window and sends 3 windows of
// frames to a Conn whose application does not read fails it with a
// protocol error once it exceeds the window; the Conn buffers no more.
func TestHostilePeer(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	const window, frameLen = 256 << 10, 16 << 10
	near, far := net.Pipe()
	defer far.Close()
	c := New(near, Options{Window: window})
	defer c.Close()
	var frames [][]byte
	for seq := range uint64(3 * window / frameLen) {
		frames = append(frames, rawFrame(seq, 0, randomData(frameLen, seq)))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sent := make(chan int, 1)
	go func() {
		n := 0
		for _, f := range frames {
			if _, err := far.Write(f); err != nil {
				break
			}
			n++
		}
		sent <- n
	}()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("no failure after %d frames: %s", len(frames), &c.recv)
	}
	runtime.ReadMemStats(&after)
	_, err := io.ReadAll(c) // what arrived in order first, then the error
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "peer exceeded the flow-control window") {
		t.Fatalf("got %v, want a protocol error for the window", err)
	}
	n := <-sent
	c.recv.mu.Lock()
	maxBuf := c.recv.maxBuf
	c.recv.mu.Unlock()
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("failed after %d of %d frames; buffered at most %d bytes; allocated %d", n, len(frames), maxBuf, alloc)
	if maxBuf > window+32<<10 || n > (window+32<<10)/frameLen+2 || alloc > 2*window {
		t.Errorf("buffered up to %d bytes, took %d frames, allocated %d bytes; window %d", maxBuf, n, alloc, window)
	}
}

// rawFrame builds one frame by hand.
func rawFrame(seq uint64, flags byte, payload []byte) []byte {
	b := make([]byte, headerLen+len(payload))
	putHeader(b, seq, flags, len(payload))
	copy(b[headerLen:], payload)
	return b
}

// TestCloseFlushes: Close right after CloseWrite still delivers the frames
// already queued, as a TCP close does; the peer reads them and io.EOF, and
// only its writes fail, since A is gone.
func TestCloseFlushes(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 1)
	ca, cb := New(slowWriter{a[0], 2 * time.Millisecond}, Options{}), New(b[0], Options{})
	defer cb.Close()
	data := randomData(1<<20, 8)
	closed := make(chan error, 1)
	go func() {
		err := writeAll(ca, data, 8)
		ca.Close()
		closed <- err
	}()
	got, err := io.ReadAll(cb)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes of %d, %v", len(got), len(data), err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's Write to fail", 5*time.Second, func() bool {
		_, err := cb.Write([]byte("x"))
		return errors.Is(err, ErrStripeLost)
	})
	if n, err := cb.Read(got); n != 0 || err != io.EOF {
		t.Errorf("B's Read after A closed: %d, %v; want EOF", n, err)
	}
}

// TestCloseSendsEnd: Close without CloseWrite ends the stream as a TCP
// close does: the peer reads every byte written, then io.EOF (not a lost
// stripe), as a server's final ErrorResponse before it closes must reach
// the client.
func TestCloseSendsEnd(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 3)
	ca, cb := newPair(t, a, b, Options{}, Options{})
	data := randomData(256<<10, 9)
	if _, err := ca.Write(data); err != nil {
		t.Fatal(err)
	}
	ca.Close()
	got, err := io.ReadAll(cb)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes of %d, %v; want all, then io.EOF", len(got), len(data), err)
	}
	cb.Close()
}

// TestFailureDeliversWhatArrived: when a stripe is lost, Read still returns
// the bytes that arrived in order before the loss, then the error naming
// the stripe.
func TestFailureDeliversWhatArrived(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 1)
	ca, cb := newPair(t, a, b, Options{}, Options{})
	data := randomData(64<<10, 10)
	if _, err := ca.Write(data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the data to arrive", 5*time.Second, func() bool { return cb.Stats().BytesIn == int64(len(data)) })
	a[0].Close() // the stripe dies under A, without END
	got, err := io.ReadAll(cb)
	if !bytes.Equal(got, data) || !errors.Is(err, ErrStripeLost) {
		t.Fatalf("read %d bytes of %d, %v; want all, then ErrStripeLost", len(got), len(data), err)
	}
	ca.Close()
	cb.Close()
}

// TestWriteFailsOncePeerIsGone: B stops reading, so A's Write waits for
// credit; B's application then goes away (END, then its stripes close).
// A's waiting Write fails at once, and later ones too, while A still
// reads what B sent, then EOF. It used to wait for credit forever: the
// server's relay then held a database session writing a result
// (ClientWrite) for as long as it ran.
func TestWriteFailsOncePeerIsGone(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := tcpPairs(t, 2)
	opts := Options{Window: 256 << 10}
	ca, cb := newPair(t, a, b, opts, opts)
	wrote := make(chan error, 1)
	go func() {
		buf := randomData(64<<10, 11)
		for {
			if _, err := ca.Write(buf); err != nil {
				wrote <- err
				return
			}
		}
	}()
	waitFor(t, "A to wait for B's credit", 5*time.Second, func() bool {
		ca.send.mu.Lock()
		defer ca.send.mu.Unlock()
		return ca.send.room != nil && ca.send.queuedTotal() == 0
	})
	// B's stripes close with nothing unread in their sockets: a socket
	// closed with unread bytes sends a reset, which is a lost stripe, not a
	// peer that went away cleanly (CI once saw it).
	waitFor(t, "B to take in every byte A sent", 5*time.Second, func() bool {
		return cb.bytesIn.Load() == ca.bytesOut.Load()
	})
	if _, err := cb.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	cb.Close() // END, then every stripe closes; B never read
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrStripeLost) {
			t.Errorf("A's waiting Write: %v, want ErrStripeLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's Write still waits for credit from a peer that has closed every stripe")
	}
	if _, err := ca.Write([]byte("x")); !errors.Is(err, ErrStripeLost) {
		t.Errorf("A's next Write: %v, want ErrStripeLost", err)
	}
	if got, err := io.ReadAll(ca); err != nil || string(got) != "bye" {
		t.Errorf("A read %q, %v; want B's bytes, then EOF", got, err)
	}
	// A relay half-closes after its upstream's EOF: that is no failure.
	if err := ca.CloseWrite(); err != nil {
		t.Errorf("A's CloseWrite after B has gone: %v", err)
	}
	ca.Close()
}
