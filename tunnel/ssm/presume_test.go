package ssm

import (
	"context"
	"encoding/json"
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
	c.NewPath() // the websocket was resumed: the resend may have died with the old one
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

// TestChannelFullWindowOfLostAcks: every message in the window reached an
// agent that never re-acks a duplicate, and every ack was lost. Resends
// cannot free the window and a probe could not be sent into it, so the
// next Send itself goes out as the proof: one message beyond the window
// once the resends have gone out, whose ack proves them and frees the
// window. Without a resend since the last fresh message, the window holds.
func TestChannelFullWindowOfLostAcks(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Window: 2, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	for range 2 {
		if err := c.Send(context.Background(), PayloadOutput, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	sendSoon := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return c.Send(ctx, PayloadOutput, []byte("y"))
	}
	if err := sendSoon(); err == nil {
		t.Fatal("a Send went beyond a full window with nothing resent")
	}
	clock = clock.Add(c.rtt.timeout(0) + time.Millisecond)
	if _, pending := c.resendDue(); !pending || len(c.resent) != 2 {
		t.Fatalf("resent %d, want both", len(c.resent))
	}
	clock = clock.Add(time.Millisecond)
	if err := sendSoon(); err != nil {
		t.Fatalf("the Send that would prove the resends: %v", err)
	}
	if err := sendSoon(); err == nil {
		t.Fatal("a second Send went beyond the window before the first was acked")
	}
	if _, err := c.Handle(ackFor(t, 2)); err != nil {
		t.Fatal(err)
	}
	if c.inWindow != 0 {
		t.Fatalf("%d in the window after the proof, want 0", c.inWindow)
	}
	if err := sendSoon(); err != nil {
		t.Fatalf("Send after the proof: %v", err)
	}
}
