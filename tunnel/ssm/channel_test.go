package ssm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

var (
	fixedTime = time.UnixMilli(1700000000000)
	fixedID   = uuid.MustParse("01234567-89ab-4cde-8f01-23456789abcd")
)

// recorder captures frames a Channel writes.
type recorder struct {
	mu     sync.Mutex
	frames [][]byte
}

func (r *recorder) write(f []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, bytes.Clone(f))
	return nil
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

func (r *recorder) take() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

// flushControl writes the queued acks, as Run would.
func (c *Channel) flushControl() {
	for _, f := range c.ctrl.take(nil) {
		_ = c.cfg.Write(f)
	}
}

func ackedSeqs(t *testing.T, frames [][]byte) []int64 {
	t.Helper()
	seqs := []int64{}
	for _, f := range frames {
		m, err := Decode(f)
		if err != nil || m.MessageType != TypeAcknowledge {
			t.Fatalf("expected an acknowledge frame, got %v %v", m, err)
		}
		var a AckContent
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, a.AcknowledgedMessageSequenceNumber)
	}
	return seqs
}

func agentOutput(t *testing.T, seq int64, payload string) *Message {
	t.Helper()
	m := &Message{MessageType: TypeOutputStreamData, CreatedDate: 1700000000000, SequenceNumber: seq,
		MessageID: uuid.New(), PayloadType: PayloadOutput, Payload: []byte(payload)}
	f, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestChannelTranscript replays the plugin's reordering transcript. The one
// intended difference: a duplicate of a delivered message is re-acked.
func TestChannelTranscript(t *testing.T) {
	tr := loadVectors(t).Transcripts[0]
	rec := &recorder{}
	var delivered []string
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write,
		Deliver: func(m *Message) bool { delivered = append(delivered, string(m.Payload)); return true }})
	for seq := range int64(3) { // "2 (in order, not shown)": 0, 1, 2 delivered first
		if _, err := c.Handle(agentOutput(t, seq, "A")); err != nil {
			t.Fatal(err)
		}
	}
	c.flushControl()
	rec.take()
	delivered = nil
	for i, st := range tr.Steps {
		if _, err := c.Handle(agentOutput(t, st.ReceivedSeq, st.Payload)); err != nil {
			t.Fatal(err)
		}
		c.flushControl()
		wantAcks := st.AcksSent
		if i == len(tr.Steps)-1 {
			wantAcks = []int64{st.ReceivedSeq} // plugin: none; we re-ack the duplicate
		}
		if got := ackedSeqs(t, rec.take()); fmt.Sprint(got) != fmt.Sprint(wantAcks) {
			t.Errorf("step %d: acked %v, want %v", i, got, wantAcks)
		}
		if fmt.Sprint(delivered) != fmt.Sprint(st.Delivered) && !(len(delivered) == 0 && len(st.Delivered) == 0) {
			t.Errorf("step %d: delivered %v, want %v", i, delivered, st.Delivered)
		}
		delivered = nil
		if c.expected != st.ExpectedAfter {
			t.Errorf("step %d: expected seq %d, want %d", i, c.expected, st.ExpectedAfter)
		}
	}
}

// TestChannelAckMatchesVector builds the ack for agent seq 2 and compares it
// with the plugin's captured ack byte for byte.
func TestChannelAckMatchesVector(t *testing.T) {
	var want []byte
	for _, v := range loadVectors(t).Vectors {
		if v.Name == "acknowledge_for_output_stream_data_seq2" {
			want = mustHex(t, v.SerializedHex)
		}
	}
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write,
		Deliver: func(*Message) bool { return true },
		NewID:   func() uuid.UUID { return fixedID }, Now: func() time.Time { return fixedTime }})
	c.expected = 2
	m := agentOutput(t, 2, "x")
	m.MessageID = uuid.MustParse("fedcba98-7654-4321-8fed-cba987654321")
	if _, err := c.Handle(m); err != nil {
		t.Fatal(err)
	}
	c.flushControl()
	got := rec.take()
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("ack\n%x\nwant\n%x", got, want)
	}
}

// TestChannelSendFlagMatchesVector: a TerminateSession Flag is byte for
// byte the plugin's (4-byte big-endian payload, sequenced).
func TestChannelSendFlagMatchesVector(t *testing.T) {
	var want []byte
	for _, v := range loadVectors(t).Vectors {
		if v.Name == "flag_terminate_session" {
			want = mustHex(t, v.SerializedHex)
		}
	}
	m, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write,
		NewID: func() uuid.UUID { return m.MessageID }, Now: func() time.Time { return fixedTime }})
	c.nextSeq = m.SequenceNumber
	if err := c.SendFlag(t.Context(), FlagTerminateSession); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("flag\n%x\nwant\n%x", got, want)
	}
}

// TestReceiveNeverWaitsForWrites: while the websocket write is stuck (the
// peer is not reading), Handle still takes every message; acks beyond the
// queue's bound are dropped and counted, and the queued ones go out once
// the writer runs. A read loop that waited for its own ack writes would
// stall both peers when both TCP buffers are full.
func TestReceiveNeverWaitsForWrites(t *testing.T) {
	unblock := make(chan struct{})
	rec := &recorder{}
	write := func(f []byte) error { <-unblock; return rec.write(f) }
	delivered := 0
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: write, ControlLimit: 100,
		Deliver: func(*Message) bool { delivered++; return true }})

	handled := make(chan error, 1)
	go func() {
		for seq := range int64(150) {
			if _, err := c.Handle(agentOutput(t, seq, "x")); err != nil {
				handled <- err
				return
			}
		}
		handled <- nil
	}()
	select {
	case err := <-handled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(unblock)
		t.Fatal("Handle blocked behind a stuck websocket write")
	}
	if st := c.Stats(); delivered != 150 || st.ControlDropped != 50 {
		t.Fatalf("delivered %d, dropped %d acks; want 150 delivered, 50 acks past the bound of 100 dropped", delivered, st.ControlDropped)
	}

	close(unblock)
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan struct{})
	go func() { defer close(runDone); c.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	for rec.len() < 100 {
		time.Sleep(time.Millisecond)
	}
	acked := ackedSeqs(t, rec.take())
	if len(acked) != 100 || acked[0] != 0 || acked[99] != 99 {
		t.Errorf("writer sent acks %v, want 0..99 in order", acked)
	}
}

// lossyLink carries frames from one Channel to another, dropping,
// duplicating and reordering them. One goroutine per direction.
type lossyLink struct {
	in   chan []byte
	drop float64
	rng  *rand.Rand
}

func (l *lossyLink) run(ctx context.Context, to *Channel) {
	var held []byte
	deliver := func(f []byte) {
		m, err := Decode(f)
		if err != nil {
			panic(err)
		}
		if _, err := to.Handle(m); err != nil {
			panic(err)
		}
	}
	for {
		select {
		case f := <-l.in:
			switch r := l.rng.Float64(); {
			case r < l.drop:
			case r < 2*l.drop:
				deliver(f)
				deliver(bytes.Clone(f))
			case r < 3*l.drop && held == nil:
				held = f // reorder: deliver after the next frame
				continue
			default:
				deliver(f)
			}
			if held != nil {
				deliver(held)
				held = nil
			}
		case <-ctx.Done():
			return
		}
	}
}

// TestChannelLossyLink sends 2 MB each way between a client and an agent
// Channel over a link that drops 5%, duplicates and reorders frames.
func TestChannelLossyLink(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	toAgent := &lossyLink{in: make(chan []byte, 4096), drop: 0.05, rng: rand.New(rand.NewPCG(1, 2))}
	toClient := &lossyLink{in: make(chan []byte, 4096), drop: 0.05, rng: rand.New(rand.NewPCG(3, 4))}
	send := func(l *lossyLink) func([]byte) error {
		return func(f []byte) error {
			select {
			case l.in <- bytes.Clone(f):
			case <-ctx.Done():
			}
			return nil
		}
	}
	const size = 2 << 20
	recv := func(h *sha256Sink) func(m *Message) bool {
		return func(m *Message) bool { h.add(m.Payload); return true }
	}
	clientSink, agentSink := newSink(), newSink()
	client := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: send(toAgent), Deliver: recv(clientSink), Window: 256})
	agent := NewChannel(ChannelConfig{SendType: TypeOutputStreamData, SYNOnFirst: true, Write: send(toClient), Deliver: recv(agentSink), Window: 256})
	for _, f := range []func(){func() { toAgent.run(ctx, agent) }, func() { toClient.run(ctx, client) },
		func() { client.Run(ctx) }, func() { agent.Run(ctx) }} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	sum := func(c *Channel, seed uint64) (want [32]byte, err error) {
		h := sha256.New()
		rng := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 1024)
		for sent := 0; sent < size; sent += len(buf) {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			h.Write(buf)
			if err := c.Send(ctx, PayloadOutput, bytes.Clone(buf)); err != nil {
				return want, err
			}
		}
		copy(want[:], h.Sum(nil))
		return want, nil
	}
	var wantUp, wantDown [32]byte
	var errUp, errDown error
	var sends sync.WaitGroup
	sends.Add(2)
	go func() { defer sends.Done(); wantUp, errUp = sum(client, 7) }()
	go func() { defer sends.Done(); wantDown, errDown = sum(agent, 8) }()
	sends.Wait()
	if errUp != nil || errDown != nil {
		t.Fatal(errUp, errDown)
	}
	if got := agentSink.wait(t, size); got != wantUp {
		t.Error("client→agent bytes differ")
	}
	if got := clientSink.wait(t, size); got != wantDown {
		t.Error("agent→client bytes differ")
	}
	cs := client.Stats()
	if cs.Resent == 0 || cs.Duplicates == 0 || cs.Early == 0 {
		t.Errorf("link did not exercise loss/dup/reorder: %+v", cs)
	}
	t.Logf("client %+v", cs)
	t.Logf("agent %+v", agent.Stats())
}

type sha256Sink struct {
	mu sync.Mutex
	h  interface {
		Sum([]byte) []byte
		Write([]byte) (int, error)
	}
	n     int
	ready chan struct{}
	want  int
}

func newSink() *sha256Sink { return &sha256Sink{h: sha256.New(), ready: make(chan struct{})} }

func (s *sha256Sink) add(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.Write(b)
	s.n += len(b)
	if s.want > 0 && s.n >= s.want {
		close(s.ready)
		s.want = 0
	}
}

func (s *sha256Sink) wait(t *testing.T, n int) (sum [32]byte) {
	t.Helper()
	s.mu.Lock()
	if s.n < n {
		s.want = n
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-time.After(time.Minute):
			t.Fatalf("received %d of %d bytes", s.n, n)
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	copy(sum[:], s.h.Sum(nil))
	return sum
}

// TestNoLoneNewlineRewrite: unlike the plugin (vector
// plugin_quirk_lone_newline_rewritten), a payload of one LF byte is sent
// as is, and larger writes are cut into 1024-byte Output messages.
func TestNoLoneNewlineRewrite(t *testing.T) {
	rec := &recorder{}
	c := NewChannel(ChannelConfig{SendType: TypeInputStreamData, Write: rec.write})
	p := newDataPipe(t.Context(), c, DefaultMaxPayload)
	if _, err := p.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(bytes.Repeat([]byte("x"), 2500)); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for i, f := range rec.take() {
		m, err := Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && string(m.Payload) != "\n" {
			t.Errorf("lone LF sent as %q", m.Payload)
		}
		if m.PayloadType != PayloadOutput || m.SequenceNumber != int64(i) || m.Flags != 0 {
			t.Errorf("message %d: type %d seq %d flags %d", i, m.PayloadType, m.SequenceNumber, m.Flags)
		}
		sizes = append(sizes, len(m.Payload))
	}
	if fmt.Sprint(sizes) != "[1 1024 1024 452]" {
		t.Errorf("payload sizes %v", sizes)
	}
}
