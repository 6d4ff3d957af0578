package ssm

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"
)

// ackFor is the agent's acknowledge of the client's message seq.
func ackFor(t *testing.T, seq int64) *Message {
	t.Helper()
	p, _ := json.Marshal(AckContent{AcknowledgedMessageType: TypeInputStreamData, AcknowledgedMessageID: fixedID.String(),
		AcknowledgedMessageSequenceNumber: seq, IsSequentialMessage: true})
	return &Message{MessageType: TypeAcknowledge, CreatedDate: 1, Flags: HeaderFlagAck, MessageID: fixedID, Payload: p}
}

// TestChannelPresumesLostAck: against an agent that never re-acks a
// duplicate, a message whose ack was lost is resent forever. Once messages
// sent after its resends are acked on the same path, it is presumed
// delivered: it stops holding the window at the first proof, and is
// released after presumeProofs proofs and presumeAge, so the give-up
// (no ack at all for GiveUp) never ends the live channel. A message
// acked before the resend, or on another path, proves nothing.
func TestChannelPresumesLostAck(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Window: 2, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	ctx := context.Background()
	send := func() int64 {
		t.Helper()
		if err := c.Send(ctx, PayloadOutput, []byte("x")); err != nil {
			t.Fatal(err)
		}
		return c.nextSeq - 1
	}
	ack := func(seq int64) {
		t.Helper()
		if _, err := c.Handle(ackFor(t, seq)); err != nil {
			t.Fatal(err)
		}
	}
	lost := send() // its ack never comes
	early := send()
	clock = clock.Add(time.Millisecond)
	ack(early) // sent before any resend of lost: no proof
	if c.resent[lost] != nil || c.unacked[lost].proofs != 0 {
		t.Fatal("a message acked before the resend counted as proof")
	}
	resend := func() {
		t.Helper()
		clock = clock.Add(c.rtt.timeout(c.unacked[lost].resends) + time.Millisecond)
		if _, pending := c.resendDue(); !pending || c.unacked[lost].resends == 0 {
			t.Fatal("no resend")
		}
		clock = clock.Add(time.Millisecond)
	}
	proofs := func() int { return c.unacked[lost].proofs }
	resend()
	ack(send()) // sent after the resend on the same path: proof 1
	if proofs() != 1 || c.inWindow != 0 {
		t.Fatalf("%d proofs, %d in the window: want 1 and a proven message out of the window", proofs(), c.inWindow)
	}
	resend()
	c.NewPath(func() {}) // the websocket was resumed: the resend may have died with the old one
	ack(send())
	if proofs() != 1 {
		t.Fatalf("an ack on a new path proved a resend on the old one (%d proofs)", proofs())
	}
	for want := 2; want <= presumeProofs; want++ {
		resend()
		ack(send())
		if c.unacked[lost] == nil {
			t.Fatalf("presumed delivered after %d proofs and %s", want, clock.Sub(fixedTime))
		}
		if proofs() != want {
			t.Fatalf("%d proofs, want %d", proofs(), want)
		}
	}
	clock = clock.Add(presumeAge)
	resend()
	ack(send())
	if c.Unacked() != 0 || c.Stats().Presumed != 1 || c.Err() != nil {
		t.Fatalf("unacked %d, presumed %d, err %v: want the lost-ack message presumed delivered", c.Unacked(), c.Stats().Presumed, c.Err())
	}
	clock = clock.Add(2 * time.Minute) // idle past GiveUp: nothing waits, nothing ends
	if _, pending := c.resendDue(); pending || c.Err() != nil {
		t.Fatalf("idle channel: pending %v, err %v", pending, c.Err())
	}
	// A peer that stops acknowledging altogether still ends the channel.
	send()
	clock = clock.Add(2 * time.Minute)
	c.resendDue()
	if c.Err() == nil {
		t.Fatal("no ack for two minutes did not end the channel")
	}
}

// Against a current agent, which re-acks duplicates, a message is never
// presumed delivered however many later acks seem to prove it: only its
// own ack releases it. (Later acks can "prove" a resend that was in fact
// lost; trusting them lost a message and hung TestViaSSM, whose endpoint
// drops 5% of the client's frames.)
func TestChannelNeverPresumesWithReackingAgent(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Window: 2, GiveUp: time.Hour,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	c.PeerReacksDuplicates()
	ctx := context.Background()
	send := func() int64 {
		t.Helper()
		if err := c.Send(ctx, PayloadOutput, []byte("x")); err != nil {
			t.Fatal(err)
		}
		return c.nextSeq - 1
	}
	lost := send()
	for range presumeProofs + 2 {
		clock = clock.Add(c.rtt.timeout(c.unacked[lost].resends) + presumeAge)
		c.resendDue()
		clock = clock.Add(time.Millisecond)
		if _, err := c.Handle(ackFor(t, send())); err != nil {
			t.Fatal(err)
		}
	}
	if c.unacked[lost] == nil || c.Stats().Presumed != 0 {
		t.Fatalf("presumed %d: a message was released without its ack", c.Stats().Presumed)
	}
	if _, err := c.Handle(ackFor(t, lost)); err != nil || c.Unacked() != 0 {
		t.Fatalf("its own ack: unacked %d, %v", c.Unacked(), err)
	}
}

// fullWindow is a channel with a window of 2, both messages sent and
// unacknowledged, on a clock the test moves.
type fullWindow struct {
	t     *testing.T
	c     *Channel
	clock time.Time
}

func newFullWindow(t *testing.T, reacks bool) *fullWindow {
	w := &fullWindow{t: t, clock: fixedTime}
	w.c = NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: (&recorder{}).write, Window: 2, GiveUp: time.Hour,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return w.clock }})
	if reacks {
		w.c.PeerReacksDuplicates()
	}
	for range 2 {
		if err := w.c.Send(context.Background(), PayloadOutput, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// sends reports whether a Send goes out within 50 ms (the fake clock does
// not move: nothing but an ack or a resend can make room).
func (w *fullWindow) sends() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	return w.c.Send(ctx, PayloadOutput, []byte("y")) == nil
}

// resendAll moves the clock past every message's timeout and resends them.
func (w *fullWindow) resendAll() {
	w.t.Helper()
	w.clock = w.clock.Add(maxRTO + time.Millisecond)
	if _, pending := w.c.resendDue(); !pending {
		w.t.Fatal("nothing to resend")
	}
	w.clock = w.clock.Add(time.Millisecond)
}

func (w *fullWindow) ack(seq int64) {
	w.t.Helper()
	if _, err := w.c.Handle(ackFor(w.t, seq)); err != nil {
		w.t.Fatal(err)
	}
}

// TestChannelFullWindowOfLostAcks: every message in the window reached an
// agent that never re-acks a duplicate, and every ack was lost. Resends
// cannot free the window and a probe could not be sent into it, so the
// next Send itself goes out as the proof: one message beyond the window
// once the resends have gone out, whose ack proves them and frees the
// window. Without a resend since the last fresh message, the window holds.
func TestChannelFullWindowOfLostAcks(t *testing.T) {
	w := newFullWindow(t, false)
	if w.sends() {
		t.Fatal("a Send went beyond a full window with nothing resent")
	}
	w.resendAll()
	if !w.sends() {
		t.Fatal("the Send that would prove the resends waited")
	}
	if w.sends() {
		t.Fatal("a second Send went beyond the window before the first was acked")
	}
	w.ack(2)
	if w.c.inWindow != 0 {
		t.Fatalf("%d in the window after the proof, want 0", w.c.inWindow)
	}
	if !w.sends() {
		t.Fatal("Send waited after the proof")
	}
}

// An agent that stops acknowledging altogether (hung, its websocket still
// up) gets resends round after round until the give-up; the window lets
// at most maxBeyondWindow messages past it meanwhile, not one per round.
func TestChannelFullWindowBoundedWithoutAcks(t *testing.T) {
	w := newFullWindow(t, false)
	for range 12 {
		w.resendAll()
		w.sends()
	}
	if n := w.c.Unacked(); n != 2+maxBeyondWindow {
		t.Fatalf("%d messages unacknowledged after 12 rounds of resends, want the window of 2 and %d beyond it", n, maxBeyondWindow)
	}
}

// A current agent re-acks resends, so resends never open its full window;
// nor, against an old agent, does the resend of a message already proven
// (out of the window already, resent until it is presumed delivered).
func TestChannelFullWindowHoldsWhenResendsNeedNoProof(t *testing.T) {
	w := newFullWindow(t, true)
	w.resendAll()
	if w.sends() {
		t.Fatal("a Send went beyond the full window of an agent that re-acks duplicates")
	}

	w = newFullWindow(t, false)
	w.resendAll()
	if !w.sends() { // seq 2 proves 0 and 1: they leave the window
		t.Fatal("the Send that would prove the resends waited")
	}
	w.ack(2)
	for range 2 { // seq 3 and 4 fill the window again
		if !w.sends() {
			t.Fatal("Send waited with room in the window")
		}
	}
	w.clock = w.clock.Add(time.Millisecond)
	w.c.mu.Lock() // 0 and 1 are resent again (3 and 4 are not due yet)
	for _, seq := range []int64{0, 1} {
		w.c.markResentLocked(w.c.unacked[seq], w.clock)
	}
	w.c.mu.Unlock()
	signal(w.c.space)
	if w.sends() {
		t.Fatal("the resends of proven messages let a Send past a full window of fresh ones")
	}
}

// A resend goes to the wire in the order it was stamped: a message sent
// for the first time while a resend is being written reaches the wire
// after it, so its ack is a valid proof. Before, resends were stamped
// under the lock and written after it, so a fresh Send could overtake a
// resend stamped earlier, and its ack "proved" a resend not yet sent.
func TestChannelResendNotOvertaken(t *testing.T) {
	var mu sync.Mutex
	clock := fixedTime
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	resending, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	var wire []int64 // sequence numbers in write order
	writes := 0
	write := func(f []byte) error {
		m, err := Decode(f)
		if err != nil {
			return err
		}
		mu.Lock()
		writes++
		resend := writes == 2 // message 0 again
		mu.Unlock()
		if resend {
			close(resending)
			<-release
		}
		mu.Lock()
		wire = append(wire, m.SequenceNumber)
		mu.Unlock()
		return nil
	}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: write, Window: 4, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: now})
	ctx := context.Background()
	if err := c.Send(ctx, PayloadOutput, []byte("lost ack")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clock = clock.Add(time.Second) // message 0 is overdue
	mu.Unlock()
	resent := make(chan struct{})
	go func() { defer close(resent); c.resendDue() }()
	<-resending
	mu.Lock()
	clock = clock.Add(time.Millisecond)
	mu.Unlock()
	sent := make(chan error, 1)
	go func() { sent <- c.Send(ctx, PayloadOutput, []byte("fresh")) }()
	// The wait only chooses which assertion catches an overtaking Send: the
	// one below if it wrote within it, the wire order at the end if later.
	select {
	case err := <-sent: // it overtook the resend still being written
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Handle(ackFor(t, 1)); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		proofs := c.unacked[0].proofs
		c.mu.Unlock()
		if proofs != 0 {
			t.Fatal("the ack of a message written before the resend proved the resend")
		}
		unblock()
		<-resent
		return
	case <-time.After(200 * time.Millisecond):
	}
	unblock()
	<-resent
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle(ackFor(t, 1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(wire, []int64{0, 0, 1}) || c.unacked[0].proofs != 1 {
		t.Fatalf("wire order %v, %d proofs: want 0 0 1 and the resend proven by message 1", wire, c.unacked[0].proofs)
	}
}

// Three acks of messages sent after the oldest unacked one resend it at
// once, before its timeout, and only once for those three.
func TestChannelFastRetransmit(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Window: 8, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	for range 5 {
		if err := c.Send(context.Background(), PayloadOutput, []byte("x")); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Millisecond) // well inside the timeout
	}
	rec.take()
	for seq := int64(1); seq <= 4; seq++ {
		if _, err := c.Handle(ackFor(t, seq)); err != nil {
			t.Fatal(err)
		}
		c.resendDue()
		want := 0
		if seq >= fastRetransmitAcks {
			want = 1
		}
		if got := len(rec.frames); got != want || c.Stats().Resent != int64(want) {
			t.Fatalf("after the ack of message %d: %d frames written, %d resent; want %d", seq, got, c.Stats().Resent, want)
		}
	}
	if m, err := Decode(rec.take()[0]); err != nil || m.SequenceNumber != 0 {
		t.Fatalf("resent %v (%v), want message 0", m, err)
	}
}

// A message sent while NewPath switches websockets is stamped with the new
// path's generation and written to the new websocket, so its ack proves
// nothing about a resend that went into the old one.
func TestChannelNewPathHoldsSends(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Window: 4, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	ctx := context.Background()
	if err := c.Send(ctx, PayloadOutput, []byte("lost")); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	c.resendDue() // into the websocket that is about to fail
	c.PathDown()
	sent := make(chan error, 1)
	c.NewPath(func() {
		go func() { sent <- c.Send(ctx, PayloadOutput, []byte("fresh")) }()
		select {
		case err := <-sent:
			t.Error("a message was sent while the websocket was being switched")
			sent <- err
		case <-time.After(100 * time.Millisecond):
		}
	})
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle(ackFor(t, 1)); err != nil {
		t.Fatal(err)
	}
	if p := c.unacked[0].proofs; p != 0 {
		t.Fatalf("%d proofs: the ack of a message on the new websocket proved a resend on the old one", p)
	}
}
