package relay

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
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
	h := startHeld(t, time.Minute, bulkPause)
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
	h := startHeld(t, time.Minute, bulkPause)
	result := slices.Concat(rows(8000), msg('C', "SELECT 80"), msg('Z', "I"))
	h.send(t, result)
	h.expect(t, result) // within expect's 10 s, not the hold's minute
}

// Rows of a query that then goes quiet still reach the client after the
// hold's bound.
func TestHoldIsBounded(t *testing.T) {
	h := startHeld(t, 20*time.Millisecond, bulkPause)
	part := rows(8000)
	h.send(t, part)
	h.expect(t, part)
}

// Replication's CopyData (COPY BOTH) is sent as it happens and is never
// held; a COPY out's is.
func TestHoldSkipsReplication(t *testing.T) {
	h := startHeld(t, time.Minute, bulkPause)
	copyBoth := slices.Concat(msg('W', "\x00\x00\x00"), copyData(8000))
	h.send(t, copyBoth)
	h.expect(t, copyBoth)
}

// Stop ends a session whose rows are being held at once: the held rows,
// then the final message (they end at a message boundary), then the end.
func TestStopDuringHold(t *testing.T) {
	h := startHeld(t, time.Minute, bulkPause)
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

// The pause is what gathers a bulk stream: rows that arrive during it,
// after the hold's own bound has long passed, are in the held chunk. A
// first version set the hold's deadline before the pause and ended the
// session with the read's deadline error (make bench's COPY out:
// "unexpected EOF"); the next one set it after the pause but before
// taking in what had arrived, which a stretched pause could then miss.
func TestBulkHoldTakesWhatArrivedDuringThePause(t *testing.T) {
	upstream, b := tcpPair(t)
	s := New(nil, b, Options{FrameToA: true})
	s.holdFor = time.Microsecond
	s.pause = 5 * time.Second // the writer's 20 ms sleep and write land in it however loaded the machine
	first, during := rows(4000), rows(20000)
	if _, err := upstream.Write(first); err != nil {
		t.Fatal(err)
	}
	cr := newChunkReader(b)
	defer cr.close()
	var f framer
	chunk, err := cr.next()
	f.feed(chunk)
	if err != nil || len(chunk) != len(first) || !cr.growable(chunk) {
		t.Fatalf("first chunk: %d of %d bytes, %v, growable %v", len(chunk), len(first), err, cr.growable(chunk))
	}
	wrote := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond) // well inside the pause
		_, err := upstream.Write(during)
		wrote <- err
	}()
	got, err := s.hold(cr, &f, chunk, true)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err != nil || !bytes.Equal(got, slices.Concat(first, during)) {
		t.Fatalf("held chunk of %d bytes (%v); want the %d sent before the hold and the %d sent during its pause", len(got), err, len(first), len(during))
	}
}

// Rows that trickle are not paused for: once a hold has run out before
// its buffer filled, the next chunk of a bulk stream waits only the
// hold's bound. Here a pause would last an hour.
func TestTrickleIsNotPausedFor(t *testing.T) {
	h := startHeld(t, 20*time.Millisecond, time.Hour)
	h.trickleNearBulk(t)
	past := rows(40000) // past bulkAfter: a bulk stream, but a trickling one
	h.send(t, past)
	h.expect(t, past)
}

// A bulk stream pauses, and pauses again once a trickle gives way to a
// fast stream. Only the lower bound is timed: the pause is a sleep, so a
// loaded machine can only make the stream later.
func TestBulkPauseReturnsAfterATrickle(t *testing.T) {
	const pause = time.Second
	h := startHeld(t, 200*time.Millisecond, pause)
	h.trickleNearBulk(t)
	burst := rows(200000) // past bulkAfter, and more than one chunk fills
	began := time.Now()
	h.send(t, burst)
	h.expect(t, burst)
	if took := time.Since(began); took < pause {
		t.Fatalf("a bulk stream after a trickle arrived in %v, without a pause of %v", took, pause)
	}
}

// A result whose first row is one large value starts like any other: the
// first bulkAfter bytes of the row are not paused for.
func TestLargeRowStartsWithoutAPause(t *testing.T) {
	h := startHeld(t, 20*time.Millisecond, time.Hour)
	const rowLen = 3 << 19
	header := binary.BigEndian.AppendUint32([]byte{'D'}, 4+rowLen)
	start := slices.Concat(msg('T', "x"), header, bytes.Repeat([]byte{'v'}, 512<<10))
	h.send(t, start)
	h.expect(t, start) // within 10 s, not the hour's pause
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

func startHeld(t *testing.T, holdFor, pause time.Duration) *held {
	clientEnd, a := tcpPair(t)
	upstream, b := tcpPair(t)
	h := &held{upstream: upstream, relayEnd: b, clientEnd: clientEnd, client: &recordedWrites{Conn: a}, done: make(chan Result, 1)}
	h.sess = New(h.client, b, Options{FrameToA: true})
	h.sess.holdFor = holdFor
	h.sess.pause = pause
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

// trickleNearBulk sends rows to just short of bulkAfter, the last of
// them alone, so that the session's last hold ran out: rows that trickle.
func (h *held) trickleNearBulk(t *testing.T) {
	t.Helper()
	almost := rows(bulkAfter - 20000)
	h.send(t, almost)
	h.expect(t, almost)
	slow := rows(4000) // alone in the socket: its hold runs out
	h.send(t, slow)
	h.expect(t, slow)
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
