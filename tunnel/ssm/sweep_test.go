package ssm

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/uuid"
)

// TestChannelSweepsLostAckRuns: the agent resends only its oldest
// unacknowledged message, one per tick. A lone lost ack is answered with
// that one re-ack; when the duplicates show the agent walking a run of lost
// acks (seq 10, then 11), the messages after the duplicate are acked again
// at once, reackSweep at a time and with their own MessageIds, and the walk
// continues from the end of each sweep.
func TestChannelSweepsLostAckRuns(t *testing.T) {
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write, Deliver: func(*Message) bool { return true }})
	const n = 3000
	ids := make(map[int64]uuid.UUID)
	for seq := range int64(n) {
		m := agentOutput(t, seq, "x")
		ids[seq] = m.MessageID
		if _, err := c.Handle(m); err != nil {
			t.Fatal(err)
		}
	}
	c.flushControl()
	rec.take() // every ack of the run is lost
	resend := func(seq int64) []AckContent {
		t.Helper()
		m := agentOutput(t, seq, "x")
		m.MessageID = ids[seq]
		if _, err := c.Handle(m); err != nil {
			t.Fatal(err)
		}
		c.flushControl()
		var acks []AckContent
		for _, f := range rec.take() {
			d, err := Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			var a AckContent
			if err := json.Unmarshal(d.Payload, &a); err != nil {
				t.Fatal(err)
			}
			if a.AcknowledgedMessageID != ids[a.AcknowledgedMessageSequenceNumber].String() || a.AcknowledgedMessageType != TypeOutputStreamData {
				t.Fatalf("ack for seq %d carries %s %s, want the message's own id %s", a.AcknowledgedMessageSequenceNumber,
					a.AcknowledgedMessageType, a.AcknowledgedMessageID, ids[a.AcknowledgedMessageSequenceNumber])
			}
			acks = append(acks, a)
		}
		return acks
	}
	span := func(acks []AckContent) string {
		if len(acks) == 0 {
			return "none"
		}
		return fmt.Sprintf("%d acks, %d..%d", len(acks), acks[0].AcknowledgedMessageSequenceNumber, acks[len(acks)-1].AcknowledgedMessageSequenceNumber)
	}
	for _, tc := range []struct {
		dup  int64
		want string
	}{
		{500, "1 acks, 500..500"},   // a lone lost ack: just its re-ack
		{10, "1 acks, 10..10"},      // the agent's oldest; no walk yet
		{11, "1025 acks, 11..1035"}, // walking: 11 and the next 1024
		{1036, "1025 acks, 1036..2060"},
		{2061, "939 acks, 2061..2999"}, // up to what was delivered
		{2500, "500 acks, 2500..2999"}, // inside a sweep whose acks were lost too
		{100, "1 acks, 100..100"},      // behind the walk: just its re-ack
	} {
		if got := span(resend(tc.dup)); got != tc.want {
			t.Errorf("duplicate %d: %s, want %s", tc.dup, got, tc.want)
		}
	}
	if want := int64(1024 + 1024 + 938 + 499); c.Stats().Swept != want {
		t.Errorf("Swept = %d, want %d", c.Stats().Swept, want)
	}
}
