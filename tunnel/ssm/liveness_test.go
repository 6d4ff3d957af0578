package ssm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestChannelWaitsOutAResume: while the websocket is being resumed
// (PathDown until NewPath) the channel neither resends into the dead
// websocket nor gives up, however long the resume takes; once the path
// is back it resends what waits at once and the give-up counts again from
// there. (A resume slower than GiveUp used to end the session the moment
// its websocket came back.)
func TestChannelWaitsOutAResume(t *testing.T) {
	clock := fixedTime
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	if err := c.Send(context.Background(), PayloadOutput, []byte("x")); err != nil {
		t.Fatal(err)
	}
	sent := rec.len()
	c.PathDown()
	clock = clock.Add(5 * time.Minute)
	if _, pending := c.resendDue(); pending || rec.len() != sent || c.Err() != nil {
		t.Fatalf("path down: pending %v, %d frames written, err %v: want no resend and no give-up", pending, rec.len()-sent, c.Err())
	}
	c.NewPath(func() {})
	select {
	case <-c.kick:
	default:
		t.Fatal("NewPath did not wake the retransmitter")
	}
	if _, pending := c.resendDue(); !pending || rec.len() != sent+1 || c.Err() != nil {
		t.Fatalf("path back: pending %v, %d frames written, err %v: want the waiting message resent", pending, rec.len()-sent, c.Err())
	}
	clock = clock.Add(2 * time.Minute) // still no ack on the new path
	c.resendDue()
	if !errors.Is(c.Err(), ErrNotAcknowledged) {
		t.Fatalf("no ack for 2 minutes on a live path: err %v, want ErrNotAcknowledged", c.Err())
	}
}

// TestChannelProbesBeforeGivingUp: when messages wait and nothing was
// acknowledged for probeEvery, the session is asked to probe (once per
// probeEvery), so a live peer always has something recent to ack before
// the give-up; not while the path is down, when a probe would be dropped.
func TestChannelProbesBeforeGivingUp(t *testing.T) {
	clock := fixedTime
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: (&recorder{}).write, GiveUp: time.Minute,
		Deliver: func(*Message) bool { return true }, Now: func() time.Time { return clock }})
	clock = clock.Add(time.Hour)
	if c.NeedsProbe() {
		t.Fatal("probe requested with nothing waiting")
	}
	if err := c.Send(context.Background(), PayloadOutput, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if c.NeedsProbe() {
		t.Fatal("probe requested for a message sent just now")
	}
	clock = clock.Add(probeEvery)
	if !c.NeedsProbe() {
		t.Fatalf("no probe after %s without an ack while a message waits", probeEvery)
	}
	if c.NeedsProbe() {
		t.Fatal("second probe within probeEvery")
	}
	c.PathDown()
	clock = clock.Add(probeEvery)
	if c.NeedsProbe() {
		t.Fatal("probe requested while the websocket is being resumed")
	}
	c.NewPath(func() {})
	clock = clock.Add(probeEvery)
	if !c.NeedsProbe() {
		t.Fatal("no probe on the resumed path")
	}
}
