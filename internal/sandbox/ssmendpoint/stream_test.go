package ssmendpoint

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

const vectorsFile = "../../../tunnel/ssm/testdata/vectors.json"

// wire records what an agentStream writes, decoded.
type wire struct {
	mu     sync.Mutex
	frames []*frame
}

func (w *wire) write(b []byte) error {
	f, err := decodeFrame(append([]byte(nil), b...))
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.frames = append(w.frames, f)
	return nil
}

func (w *wire) take() []*frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.frames
	w.frames = nil
	return f
}

// ackedSeqs returns the sequence numbers the acks in fs acknowledge.
func ackedSeqs(t *testing.T, fs []*frame) []int64 {
	t.Helper()
	seqs := []int64{}
	for _, f := range fs {
		if f.typ != typeAck || f.flags != 3 || f.seq != 0 || f.ptype != 0 {
			t.Fatalf("not an acknowledge: %+v", f)
		}
		var a ackPayload
		if err := json.Unmarshal(f.payload, &a); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, a.Seq)
	}
	return seqs
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func input(seq int64, payload string) *frame {
	return &frame{typ: typeInput, created: 1700000000000, seq: seq, id: uuid.New(), ptype: ptOutput, payload: []byte(payload)}
}

// TestAgentResendsOldestOnly: one resend per tick, only the oldest
// unacknowledged message, only once it is older than the RTO, and still an
// hour later (no give-up); sending never blocks, and past the buffer's
// capacity messages go out unkept.
func TestAgentResendsOldestOnly(t *testing.T) {
	var w wire
	clk := &clock{t: time.Unix(1700000000, 0)}
	s := newAgentStream(CurrentAgentVersion, w.write, func(*frame) bool { return true })
	s.now = clk.now
	for i := range 5 {
		if err := s.send(ptOutput, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sent := w.take()
	if len(sent) != 5 || sent[0].flags != 1 || sent[1].flags != 0 {
		t.Fatalf("sent %d messages, flags %d %d: want 5, SYN on the first only", len(sent), sent[0].flags, sent[1].flags)
	}
	tick := func() []*frame {
		t.Helper()
		if err := s.resendOldest(); err != nil {
			t.Fatal(err)
		}
		return w.take()
	}
	if got := tick(); len(got) != 0 {
		t.Fatalf("resent %d before the RTO", len(got))
	}
	clk.advance(initialRTO + time.Millisecond)
	for round, want := range []int64{0, -1} { // after a resend, seq 0 waits a whole RTO again
		got := tick()
		if want < 0 {
			if len(got) != 0 {
				t.Fatalf("round %d: resent %d, want none", round, len(got))
			}
			continue
		}
		if len(got) != 1 || got[0].seq != want || got[0].id != sent[0].id {
			t.Fatalf("round %d: resent %v, want only seq %d with its MessageId", round, got, want)
		}
	}
	ack := func(seq int64) {
		p, _ := json.Marshal(ackPayload{Type: typeOutput, ID: sent[seq].id.String(), Seq: seq, Sequential: true})
		if err := s.onAck(&frame{typ: typeAck, created: 1, flags: 3, id: uuid.New(), payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	ack(0)
	ack(2)
	clk.advance(maxRTO + time.Millisecond)
	if got := tick(); len(got) != 1 || got[0].seq != 1 {
		t.Fatalf("after acks of 0 and 2: resent %v, want seq 1 only", got)
	}
	if got := tick(); len(got) != 0 {
		t.Fatalf("a second resend in the same instant: %v", got)
	}
	clk.advance(time.Hour) // no give-up: an hour without acks changes nothing
	if got := tick(); len(got) != 1 || got[0].seq != 1 {
		t.Fatalf("an hour later: resent %v, want seq 1 again", got)
	}
	s.setPaused(true)
	clk.advance(maxRTO + time.Millisecond)
	if got := tick(); len(got) != 0 {
		t.Fatalf("resent %d while paused", len(got))
	}
	for range agentBufferCap {
		_ = s.send(ptOutput, []byte("x"))
	}
	w.take()
	if st := s.stats(); st.sent != 5+agentBufferCap || st.unbuffered != 3 || st.resent != 3 || st.acked != 2 {
		t.Errorf("stats %+v: want %d sent, 3 unkept, 3 resent, 2 acked", st, 5+agentBufferCap)
	}
}

// TestAgentDuplicateRule: agents since 3.2.1041.0 re-ack a duplicate; older
// ones drop it silently (§7.3). Early messages are acked at once and
// delivered in order; a message refused while not ready is neither acked
// nor consumed.
func TestAgentDuplicateRule(t *testing.T) {
	for _, tc := range []struct {
		version string
		reack   bool
	}{{CurrentAgentVersion, true}, {"3.2.1041.0", true}, {OldAgentVersion, false}, {"3.0.196.0", false}} {
		t.Run(tc.version, func(t *testing.T) {
			var w wire
			var got []string
			ready := false
			s := newAgentStream(tc.version, w.write, func(f *frame) bool {
				if !ready {
					return false
				}
				got = append(got, string(f.payload))
				return true
			})
			m := []*frame{input(0, "a"), input(1, "b"), input(2, "c")}
			_ = s.onData(m[0]) // not ready
			if acks := ackedSeqs(t, w.take()); len(acks) != 0 || len(got) != 0 {
				t.Fatalf("not ready: acked %v delivered %v", acks, got)
			}
			ready = true
			for _, f := range []*frame{m[2], m[0], m[1], m[1]} {
				_ = s.onData(f)
			}
			want := []int64{2, 0, 1}
			if tc.reack {
				want = append(want, 1)
			}
			if acks := ackedSeqs(t, w.take()); !slices.Equal(acks, want) {
				t.Errorf("acked %v, want %v", acks, want)
			}
			if !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Errorf("delivered %q, want a b c", got)
			}
		})
	}
}

// TestFrameGoldenVectors: the agent's own codec reproduces the reference
// bytes and parses them back to the reference fields.
func TestFrameGoldenVectors(t *testing.T) {
	v := loadVectorsFile(t)
	n := 0
	for _, vec := range v.Vectors {
		if vec.Fields.MessageType == typeStartPub || vec.Fields.MessageType == typePausePub {
			continue // service messages with zero header fields
		}
		t.Run(vec.Name, func(t *testing.T) {
			wireBytes := mustHex(t, vec.SerializedHex)
			f, err := decodeFrame(wireBytes)
			if err != nil {
				t.Fatal(err)
			}
			if f.typ != vec.Fields.MessageType || f.seq != vec.Fields.SequenceNumber || f.flags != vec.Fields.Flags ||
				f.id.String() != vec.Fields.MessageID || f.ptype != vec.Fields.PayloadType || f.created != vec.Fields.CreatedDate {
				t.Errorf("decoded %+v, want %+v", f, vec.Fields)
			}
			b, err := f.encode()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != string(wireBytes) {
				t.Errorf("encode differs from the reference:\n got %x\nwant %x", b, wireBytes)
			}
			var got []string
			val := newValidator(func(format string, args ...any) {
				if msg := sprintf(format, args...); !strings.Contains(msg, "not a current epoch") { // vectors use a 2023 date
					got = append(got, msg)
				}
			})
			if vec.Direction == "client->agent" && f.typ != typeAck {
				val.check(wireBytes)
				if len(got) > 0 {
					t.Errorf("validator flags a reference client frame: %q", got)
				}
			}
		})
		n++
	}
	if n < 10 {
		t.Fatalf("only %d vectors checked", n)
	}
	if _, err := (&frame{typ: typeOutput, created: 1}).encode(); err == nil {
		t.Error("an empty payload was encoded; the reference serializer refuses it")
	}
}
