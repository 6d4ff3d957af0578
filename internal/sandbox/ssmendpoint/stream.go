package ssmendpoint

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// The agent's reliable stream (docs/ssm-protocol.md §7), as the reference agent
// behaves, not as a good client would:
//   - sending never blocks: there is no window; every message is kept for
//     retransmission until acknowledged, but past agentBufferCap
//     unacknowledged messages new ones are sent without being kept (so a
//     message lost then is lost for good, as with the real agent);
//   - every 100 ms only the oldest unacknowledged message is looked at and
//     resent when it is older than the RTO; the agent never gives up;
//   - the RTO follows §7.4 (srtt 100 ms, rttvar 0, gains 1/8 and 1/4, 10 ms
//     granularity, at most 1 s), sampled on every acknowledged message;
//   - received messages are delivered in order; early ones are kept (up to
//     agentBufferCap) and acked at once; a duplicate is re-acked only by
//     agents since 3.2.1041.0, older ones drop it silently;
//   - while the client is away (paused), nothing is resent.
const (
	agentBufferCap    = 10000
	resendTick        = 100 * time.Millisecond
	initialSRTT       = 100 * time.Millisecond
	initialRTO        = 200 * time.Millisecond
	clockGranularity  = 10 * time.Millisecond
	maxRTO            = time.Second
	reackSinceVersion = "3.2.1041.0"
)

type sentMsg struct {
	frame    []byte
	lastSent time.Time
}

type agentStream struct {
	write   func(frame []byte) error // faults, then the websocket
	deliver func(f *frame) bool      // in-order client message; false: not taken now
	reack   bool
	keepAll bool             // no buffer limit (unpaced tests only)
	now     func() time.Time // time.Now; a test clock in unit tests

	sendMu  sync.Mutex // sequence order = write order
	mu      sync.Mutex
	nextSeq int64
	out     map[int64]*sentMsg
	oldest  int64
	srtt    time.Duration
	rttvar  time.Duration
	rto     time.Duration
	paused  bool

	recvMu   sync.Mutex
	expected int64
	early    map[int64]*frame

	sent, resent, unbuffered, acked, reacked, dupsDropped atomic.Int64
}

func newAgentStream(agentVersion string, write func([]byte) error, deliver func(*frame) bool) *agentStream {
	return &agentStream{write: write, deliver: deliver, reack: versionAtLeast(agentVersion, reackSinceVersion),
		out: make(map[int64]*sentMsg), early: make(map[int64]*frame),
		srtt: initialSRTT, rto: initialRTO, now: time.Now}
}

// send sends one output_stream_data message (SYN on sequence number 0).
func (s *agentStream) send(ptype uint32, payload []byte) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	now := s.now()
	s.mu.Lock()
	seq := s.nextSeq
	f := frame{typ: typeOutput, created: uint64(now.UnixMilli()), seq: seq, id: uuid.New(), ptype: ptype, payload: payload}
	if seq == 0 {
		f.flags = 1
	}
	b, err := f.encode()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.nextSeq++
	if len(s.out) < agentBufferCap || s.keepAll {
		s.out[seq] = &sentMsg{frame: b, lastSent: now}
	} else {
		s.unbuffered.Add(1)
	}
	s.mu.Unlock()
	s.sent.Add(1)
	return s.write(b)
}

// setPaused stops (or restarts) retransmission while the client is away.
func (s *agentStream) setPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
}

// resendOldest is one tick of the agent's resend scheduler.
func (s *agentStream) resendOldest() error {
	s.mu.Lock()
	for s.oldest < s.nextSeq && s.out[s.oldest] == nil {
		s.oldest++
	}
	m := s.out[s.oldest]
	now := s.now()
	if s.paused || m == nil || now.Sub(m.lastSent) <= s.rto {
		s.mu.Unlock()
		return nil
	}
	m.lastSent = now
	s.mu.Unlock()
	s.resent.Add(1)
	return s.write(m.frame)
}

// runResends resends until done is closed.
func (s *agentStream) runResends(done <-chan struct{}) {
	t := time.NewTicker(resendTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = s.resendOldest() // a failed write is the read loop's to notice
		case <-done:
			return
		}
	}
}

// onAck handles the client's acknowledge message.
func (s *agentStream) onAck(f *frame) error {
	var a ackPayload
	if err := json.Unmarshal(f.payload, &a); err != nil {
		return fmt.Errorf("acknowledge payload: %w", err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = false // any message from the client ends a pause
	m := s.out[a.Seq]
	if m == nil {
		return nil
	}
	delete(s.out, a.Seq)
	s.acked.Add(1)
	r := now.Sub(m.lastSent)
	diff := s.srtt - r
	if diff < 0 {
		diff = -diff
	}
	s.rttvar = s.rttvar*3/4 + diff/4
	s.srtt = s.srtt*7/8 + r/8
	s.rto = min(s.srtt+max(clockGranularity, 4*s.rttvar), maxRTO)
	return nil
}

// onData handles one input_stream_data message; ack writes the acknowledge.
func (s *agentStream) onData(f *frame) error {
	s.setPaused(false)
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	switch {
	case f.seq == s.expected:
		if !s.deliver(f) {
			return nil // not ready: no ack, not consumed; the client resends
		}
		s.expected++
		if err := s.ack(f); err != nil {
			return err
		}
		for {
			next := s.early[s.expected]
			if next == nil || !s.deliver(next) {
				return nil
			}
			delete(s.early, s.expected)
			s.expected++
		}
	case f.seq > s.expected:
		if s.early[f.seq] == nil {
			if len(s.early) >= agentBufferCap {
				return nil // no room: dropped without ack
			}
			s.early[f.seq] = f
		}
		return s.ack(f)
	default:
		if !s.reack {
			s.dupsDropped.Add(1)
			return nil
		}
		s.reacked.Add(1)
		return s.ack(f)
	}
}

// settle returns once the client message being delivered now has been
// acknowledged (or refused): onData delivers and acks under recvMu.
func (s *agentStream) settle() {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
}

func (s *agentStream) ack(f *frame) error {
	p, err := json.Marshal(ackPayload{Type: f.typ, ID: f.id.String(), Seq: f.seq, Sequential: true})
	if err != nil {
		return err
	}
	b, err := (&frame{typ: typeAck, created: uint64(s.now().UnixMilli()), flags: 3, id: uuid.New(), payload: p}).encode()
	if err != nil {
		return err
	}
	return s.write(b)
}

// streamStats are the agent stream's counters.
type streamStats struct {
	sent, resent, unbuffered, acked, reacked, dupsDropped int64
}

func (s *agentStream) stats() streamStats {
	return streamStats{s.sent.Load(), s.resent.Load(), s.unbuffered.Load(), s.acked.Load(), s.reacked.Load(), s.dupsDropped.Load()}
}
