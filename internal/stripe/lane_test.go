package stripe

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// countingConn counts the bytes written to a stripe.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// With a lane, a bulk transfer keeps off the first stripe, so the small
// messages there (a query on the same connection, its reply) never wait
// behind it; without one, the first stripe carries its share of the bulk.
// Each bulk write leaves a short last chunk (33 KiB in 32 KiB chunks),
// which is bulk too. The bulk is more than the window, so the reader's
// credits must flow: against the bulk, over the bulk stripes, idle that
// way (on the lane, hundreds a second would delay other connections'
// queries). Either way the peer reads every byte, in order.
func TestLaneKeepsBulkOffTheFirstStripe(t *testing.T) {
	const small, smalls, bulk = 60, 100, 100 * (33 << 10)
	for _, lane := range []bool{true, false} {
		a, b := tcpPairs(t, 4)
		wire, back := make([]atomic.Int64, len(a)), make([]atomic.Int64, len(b))
		for i := range a {
			a[i] = countingConn{Conn: a[i], n: &wire[i]}
			b[i] = countingConn{Conn: b[i], n: &back[i]}
		}
		ca, cb := newPair(t, a, b, Options{Lane: lane}, Options{Lane: lane})
		var writes [][]byte // a small write between two bulk ones, as a reply between CopyData
		for i := range smalls {
			writes = append(writes, bytes.Repeat([]byte{byte(i)}, small), bytes.Repeat([]byte{byte(i)}, bulk/smalls))
		}
		want := bytes.Join(writes, nil)
		go func() {
			for _, w := range writes {
				ca.Write(w)
			}
			ca.CloseWrite()
		}()
		got, err := io.ReadAll(cb)
		if err != nil {
			t.Fatalf("lane %v: read: %v", lane, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("lane %v: read %d bytes, not the %d written in order", lane, len(got), len(want))
		}
		first := wire[0].Load()
		laneMost := int64(smalls*(small+headerLen) + headerLen) // and END
		switch {
		case lane && first > laneMost:
			t.Errorf("with a lane, the first stripe carried %d bytes; want the small messages only (at most %d)", first, laneMost)
		case !lane && first < bulk/10:
			t.Errorf("without a lane, the first stripe carried %d bytes; want its share of the %d of bulk", first, bulk)
		}
		var credits int64
		for i := range back {
			credits += back[i].Load()
		}
		if onLane := back[0].Load(); lane && (onLane != 0 || credits == 0) {
			t.Errorf("with a lane, the reader's credits took %d of their %d bytes on the lane; want none there", onLane, credits)
		}
	}
}

// gatedConn holds every Write until open is closed, as a lane session
// busy with other connections' traffic would.
type gatedConn struct {
	net.Conn
	open chan struct{}
}

func (c gatedConn) Write(p []byte) (int, error) {
	<-c.open
	return c.Conn.Write(p)
}

// A burst of small writes does not pile up on a lane that is backed up:
// past a few KiB queued there, they spread over the other stripes, and
// the peer still reads every byte in order once the lane moves again.
func TestLaneBacklogSpills(t *testing.T) {
	const small, smalls = 100, 400
	a, b := tcpPairs(t, 3)
	gate := make(chan struct{})
	a[0] = gatedConn{Conn: a[0], open: gate}
	wire := make([]atomic.Int64, len(a))
	for i := 1; i < len(a); i++ {
		a[i] = countingConn{Conn: a[i], n: &wire[i]}
	}
	ca, cb := newPair(t, a, b, Options{Lane: true}, Options{Lane: true})
	var want []byte
	for i := range smalls {
		w := bytes.Repeat([]byte{byte(i)}, small)
		want = append(want, w...)
		if _, err := ca.Write(w); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	ca.send.mu.Lock()
	onLane := ca.send.stripes[0].queued
	ca.send.mu.Unlock()
	if onLane >= laneBacklog+small+headerLen {
		t.Errorf("%d bytes queued on the blocked lane; want them spilled past %d", onLane, laneBacklog)
	}
	close(gate)
	ca.CloseWrite()
	got, err := io.ReadAll(cb)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written in order", len(got), len(want))
	}
	if spilled := wire[1].Load() + wire[2].Load(); spilled < int64(len(want)-laneBacklog) {
		t.Errorf("the other stripes carried %d bytes; want the burst past the lane's %d", spilled, laneBacklog)
	}
}

// hoardingConn takes every Write at once and hands it to the socket from
// its own goroutine, as a kernel socket whose peer reads slowly (the SSM
// agent, 1 KiB per millisecond) holds what the stripe's queue no longer
// shows. Close ends the goroutine.
type hoardingConn struct {
	net.Conn
	held   chan []byte
	done   chan struct{}
	closed sync.Once
}

func hoard(c net.Conn) *hoardingConn {
	h := &hoardingConn{Conn: c, held: make(chan []byte, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for p := range h.held {
			if _, err := c.Write(p); err != nil {
				return
			}
		}
	}()
	return h
}

func (h *hoardingConn) Write(p []byte) (int, error) {
	h.held <- bytes.Clone(p)
	return len(p), nil
}

func (h *hoardingConn) Close() error {
	err := h.Conn.Close()
	h.closed.Do(func() { close(h.held) })
	<-h.done
	return err
}

// While both directions carry bulk, credits keep to the lane: a bulk
// stripe's socket may hold far more than its queue shows, and a credit
// behind it would stall the peer's window. Here every stripe's queue
// looks empty (hoardingConn), so only that rule keeps B's credits on the
// lane. Both sides read every byte the other wrote.
func TestCreditsBesideTwoWayBulk(t *testing.T) {
	const pieces, piece = 100, 33 << 10
	a, b := tcpPairs(t, 4)
	lane := new(atomic.Int64)
	for i := range b {
		b[i] = hoard(b[i])
	}
	b[0] = countingConn{Conn: b[0], n: lane}
	ca, cb := newPair(t, a, b, Options{Lane: true}, Options{Lane: true})
	want := bytes.Repeat([]byte("two-way bulk "), pieces*piece/13)
	send := func(c *Conn) {
		for off := 0; off < len(want); off += piece {
			if _, err := c.Write(want[off:min(off+piece, len(want))]); err != nil {
				return
			}
		}
		c.CloseWrite()
	}
	go send(ca)
	go send(cb)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(cb); got <- b }()
	fromB, err := io.ReadAll(ca)
	if err != nil || !bytes.Equal(fromB, want) {
		t.Fatalf("A read %d bytes (%v), not the %d B wrote", len(fromB), err, len(want))
	}
	if fromA := <-got; !bytes.Equal(fromA, want) {
		t.Fatalf("B read %d bytes, not the %d A wrote", len(fromA), len(want))
	}
	if n := lane.Load(); n < headerLen+8 { // a CREDIT's frame; END alone is headerLen
		t.Errorf("B's lane carried %d bytes; want its credits there while it sent bulk too", n)
	}
}
