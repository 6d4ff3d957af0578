package relay

import (
	"bytes"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A result that arrives a buffer at a time reaches the client in full
// chunks: the first 8 KiB of rows wait for the rest rather than going out
// alone, and the whole result arrives intact.
func TestHoldJoinsRowsIntoFullChunks(t *testing.T) {
	h := startHeld(t, time.Minute)
	first := rows(8000)
	h.send(t, first)
	h.waitRead(t)
	rest := slices.Concat(rows(coalesceSize), msg('C', "SELECT 1"), msg('Z', "I"))
	h.send(t, rest)
	want := slices.Concat(first, rest)
	h.expect(t, want)
	h.end(t)
	if sizes := h.client.sizes(); len(sizes) == 0 || sizes[0] != coalesceSize {
		t.Fatalf("client writes of %v bytes; want the first to fill the %d-byte buffer", sizes, coalesceSize)
	}
}

// Rows followed by the end of their result go out at once: a result that
// has ended has nothing more coming to wait for.
func TestHoldEndsWithTheResult(t *testing.T) {
	h := startHeld(t, time.Minute)
	result := slices.Concat(rows(8000), msg('C', "SELECT 80"), msg('Z', "I"))
	h.send(t, result)
	h.expect(t, result) // within expect's 10 s, not the hold's minute
}

// Rows of a query that then goes quiet still reach the client after the
// hold's bound.
func TestHoldIsBounded(t *testing.T) {
	h := startHeld(t, 20*time.Millisecond)
	part := rows(8000)
	h.send(t, part)
	h.expect(t, part)
}

// Replication's CopyData (COPY BOTH) is sent as it happens and is never
// held; a COPY out's is.
func TestHoldSkipsReplication(t *testing.T) {
	h := startHeld(t, time.Minute)
	copyBoth := slices.Concat(msg('W', "\x00\x00\x00"), copyData(8000))
	h.send(t, copyBoth)
	h.expect(t, copyBoth)
}

// Stop ends a session whose rows are being held at once: the held rows,
// then the final message (they end at a message boundary), then the end.
func TestStopDuringHold(t *testing.T) {
	h := startHeld(t, time.Minute)
	part := rows(8000)
	h.send(t, part)
	h.waitRead(t)
	final := msg('E', "SFATAL\x00")
	h.sess.Stop(final)
	h.expect(t, slices.Concat(part, final))
	h.clientEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(h.clientEnd); len(rest) != 0 || err != nil {
		t.Fatalf("after the final message the client got %q, %v; want the end", rest, err)
	}
	<-h.done
}

// Inside a large result a hold first pauses, then takes what has arrived.
// A pause that outlasts the hold's bound (the scheduler stretched it) is no
// error. A first version set the deadline before the pause and returned
// the read's deadline error after it, which ended the session (make
// bench's COPY out: "unexpected EOF").
func TestBulkHoldPauseOutlastsTheHold(t *testing.T) {
	upstream, b := tcpPair(t)
	s := New(nil, b, Options{FrameToA: true})
	s.holdFor = time.Microsecond // far shorter than bulkPause
	part := rows(4000)
	if _, err := upstream.Write(part); err != nil {
		t.Fatal(err)
	}
	cr := newChunkReader(b)
	defer cr.close()
	var f framer
	chunk, err := cr.next()
	f.feed(chunk)
	if err != nil || !cr.growable(chunk) || !f.midRows() {
		t.Fatalf("first chunk: %d bytes, %v, growable %v, inside rows %v; want a growable chunk of rows", len(chunk), err, cr.growable(chunk), f.midRows())
	}
	got, err := s.hold(cr, &f, chunk, true)
	if err != nil {
		t.Fatalf("a bulk hold whose pause outlasted the hold: %v", err)
	}
	if !bytes.Equal(got, part[:len(got)]) {
		t.Fatal("the held chunk is not the rows sent")
	}
}

// held is a FrameToA session from a TCP upstream to a client whose writes
// are recorded.
type held struct {
	upstream  net.Conn // the test's end: it plays the database
	relayEnd  net.Conn // the session's upstream connection
	clientEnd net.Conn // the test's end of the client connection
	client    *recordedWrites
	sess      *Session
	done      chan Result
}

func startHeld(t *testing.T, holdFor time.Duration) *held {
	clientEnd, a := tcpPair(t)
	upstream, b := tcpPair(t)
	h := &held{upstream: upstream, relayEnd: b, clientEnd: clientEnd, client: &recordedWrites{Conn: a}, done: make(chan Result, 1)}
	h.sess = New(h.client, b, Options{FrameToA: true})
	h.sess.holdFor = holdFor
	go func() { h.done <- h.sess.Run(nil, nil) }()
	return h
}

func (h *held) send(t *testing.T, p []byte) {
	t.Helper()
	if _, err := h.upstream.Write(p); err != nil {
		t.Fatal(err)
	}
}

// waitRead waits until the session has read everything sent so far.
func (h *held) waitRead(t *testing.T) {
	t.Helper()
	rc, err := h.relayEnd.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var queued int
		var ioctlErr error
		rc.Control(func(fd uintptr) { queued, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if ioctlErr != nil {
			t.Fatal(ioctlErr)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session left %d bytes unread for 10 s", queued)
		}
	}
}

// expect reads want from the client within 10 s.
func (h *held) expect(t *testing.T, want []byte) {
	t.Helper()
	h.clientEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer h.clientEnd.SetReadDeadline(time.Time{})
	got := make([]byte, len(want))
	if n, err := io.ReadFull(h.clientEnd, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client got %d of %d bytes (%v), intact %v", n, len(want), err, bytes.Equal(got[:n], want[:n]))
	}
}

// end closes the upstream and waits for the session to end.
func (h *held) end(t *testing.T) {
	t.Helper()
	h.upstream.Close()
	if res := <-h.done; res.Err != nil {
		t.Fatalf("session ended with %v", res.Err)
	}
}

// rows returns DataRows of 100 bytes, about n bytes of them.
func rows(n int) []byte { return messages('D', n) }

// copyData returns CopyData messages of 100 bytes, about n bytes of them.
func copyData(n int) []byte { return messages('d', n) }

func messages(typ byte, n int) []byte {
	var out []byte
	for len(out)+100 <= n {
		out = append(out, msg(typ, strings.Repeat("x", 95))...)
	}
	return out
}

// recordedWrites records the size of each write that reaches a connection.
type recordedWrites struct {
	net.Conn
	mu sync.Mutex
	n  []int
}

func (c *recordedWrites) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n = append(c.n, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordedWrites) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.n)
}
