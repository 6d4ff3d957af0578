package ssm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

const (
	// fastRetransmitAcks is how many later messages must be acknowledged
	// before the oldest unacknowledged one is resent without waiting for
	// its timeout.
	fastRetransmitAcks = 3
	// presumeProofs and presumeAge: resends shown to have arrived, and the
	// age, before a never-acked message is presumed delivered (see
	// proveLocked).
	presumeProofs = 3
	presumeAge    = 10 * time.Second
)

// AckContent is the acknowledge payload (§7.2); field order is the wire order.
type AckContent struct {
	AcknowledgedMessageType           string `json:"AcknowledgedMessageType"`
	AcknowledgedMessageID             string `json:"AcknowledgedMessageId"`
	AcknowledgedMessageSequenceNumber int64  `json:"AcknowledgedMessageSequenceNumber"`
	IsSequentialMessage               bool   `json:"IsSequentialMessage"`
}

func (c *Channel) handleAck(m *Message) error {
	var a AckContent
	if err := json.Unmarshal(m.Payload, &a); err != nil {
		return fmt.Errorf("decode acknowledge: %w", err)
	}
	c.stats.acksReceived.Add(1)
	now := c.cfg.Now()
	fast := false
	c.mu.Lock()
	om, ok := c.unacked[a.AcknowledgedMessageSequenceNumber]
	if ok {
		c.releaseLocked(om)
		c.progress = now
		if om.resends == 0 { // Karn: retransmitted samples are ambiguous
			c.rtt.sample(now.Sub(om.lastSent))
			c.proveLocked(om)
		}
		fast = c.fastRetransmitLocked(om)
	}
	empty := len(c.unacked) == 0
	c.mu.Unlock()
	if !ok {
		return nil
	}
	signal(c.space)
	if empty {
		signal(c.drained)
	}
	if fast {
		signal(c.kick)
	}
	return nil
}

// releaseLocked forgets an acknowledged (or presumed delivered) message.
func (c *Channel) releaseLocked(om *outMsg) {
	delete(c.unacked, om.seq)
	delete(c.resent, om.seq)
	if om.proofs == 0 {
		c.inWindow--
	}
	for c.oldest < c.nextSeq && c.unacked[c.oldest] == nil {
		c.oldest++
	}
}

// markResentLocked records one more send of om on the current path.
func (c *Channel) markResentLocked(om *outMsg, now time.Time) {
	om.resends++
	om.fast, om.laterAcked = false, 0
	om.lastSent = now
	om.gen = c.gen
	c.resent[om.seq] = om
}

// proveLocked takes the acknowledgement of x, sent once, as proof for every
// resent message whose last resend went out before x on the same path: the
// path is ordered, so that resend reached the peer too. A message with
// presumeProofs such proofs (for distinct resends), older than presumeAge,
// and still no ack was delivered and lost only its acks: agents before
// 3.2.1041.0 drop duplicates without re-acking them (docs/ssm-protocol.md §7.3,
// §7.4). It is released, so it is no longer resent nor counted as waiting.
// The age bound covers the agent's not-ready start-up, when it leaves an
// in-order message unacked while acking the early ones behind it.
func (c *Channel) proveLocked(x *outMsg) {
	for _, m := range c.resent {
		if m.gen != x.gen || !m.lastSent.Before(x.lastSent) || m.provenAt == m.resends {
			continue
		}
		m.provenAt = m.resends
		if m.proofs++; m.proofs == 1 {
			c.inWindow-- // it arrived: it no longer holds the window
			signal(c.space)
		}
		if !c.reacks.Load() && m.proofs >= presumeProofs && x.lastSent.Sub(m.firstSent) >= presumeAge {
			c.releaseLocked(m)
			c.stats.presumed.Add(1)
			c.cfg.Logger.Debug("message presumed delivered: resent and never acknowledged, while later messages were",
				"seq", m.seq, "resends", m.resends)
		}
	}
}

// fastRetransmitLocked marks the oldest unacknowledged message for resending
// at once (by Run's retransmitter) when three messages sent after it were
// acknowledged: it was most likely lost, and everything behind it waits for
// it. It reports whether it marked one.
func (c *Channel) fastRetransmitLocked(acked *outMsg) bool {
	oldest := c.unacked[c.oldest]
	if oldest == nil || oldest.fast || !acked.lastSent.After(oldest.lastSent) {
		return false
	}
	oldest.laterAcked++
	if oldest.laterAcked != fastRetransmitAcks {
		return false
	}
	oldest.laterAcked = 0
	oldest.fast = true
	return true
}

func (c *Channel) handleStream(m *Message) error {
	c.stats.received.Add(1)
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	switch {
	case m.SequenceNumber == c.expected:
		if !c.cfg.Deliver(m) {
			c.stats.notAccepted.Add(1)
			return nil // not acked: the peer retransmits it
		}
		c.deliveredLocked(m)
		if err := c.ack(m); err != nil {
			return err
		}
		c.drainLocked()
	case m.SequenceNumber > c.expected:
		if _, dup := c.early[m.SequenceNumber]; !dup {
			if len(c.early) >= c.cfg.ReorderLimit {
				return nil // no room: drop without ack
			}
			c.early[m.SequenceNumber] = m
			c.stats.early.Add(1)
		} else {
			c.stats.dups.Add(1)
		}
		return c.ack(m)
	default:
		// A duplicate of a delivered message: re-ack it, or a lost ack
		// would make the peer retransmit it forever (§7.3).
		c.stats.dups.Add(1)
		if err := c.ack(m); err != nil {
			return err
		}
		return c.sweepLocked(m.SequenceNumber)
	}
	return nil
}

// Lost-ack runs. The agent resends only its oldest unacknowledged message,
// one per 100 ms tick (§7.4), so when a run of our acks is lost (a
// websocket that broke while thousands of them were in flight), it walks
// through the run at ten messages a second, and whatever it lost itself
// waits behind: 25,000 lost acks stalled every stream of a session for
// over 40 minutes. Acks are idempotent, so when the peer's duplicates show
// it walking such a run, the messages after the duplicate are acked again,
// reackSweep at a time, from their remembered MessageIds.
const (
	reackRing  = 32 << 10 // MessageIds remembered: 512 KiB per session that moved data
	reackSweep = 1024     // acks re-sent per duplicate, well under ControlLimit
	reackWalk  = 16       // how far past the previous duplicate (or sweep) a walk may step
)

// deliveredLocked counts m as delivered in order and remembers its id.
func (c *Channel) deliveredLocked(m *Message) {
	if len(c.recentIDs) < reackRing {
		c.recentIDs = append(c.recentIDs, m.MessageID) // index == seq while growing
	} else {
		c.recentIDs[m.SequenceNumber%reackRing] = m.MessageID
	}
	c.expected++
}

// sweepLocked re-acks the messages after the duplicate dup when the peer is
// walking a run of lost acks: its previous duplicate was just before dup,
// or dup is just past the previous sweep. A lone lost ack sweeps nothing.
func (c *Channel) sweepLocked(dup int64) error {
	walking := c.lastDup >= 0 && dup > c.lastDup && dup <= max(c.lastDup, c.sweptTo)+reackWalk
	c.lastDup = dup
	if !walking {
		return nil
	}
	from := max(dup+1, c.expected-int64(len(c.recentIDs)))
	to := min(from+reackSweep, c.expected)
	for seq := from; seq < to; seq++ {
		if err := c.ackSeq(c.recvType, c.recentIDs[seq%reackRing], seq); err != nil {
			return err
		}
		c.stats.swept.Add(1)
	}
	c.sweptTo = max(c.sweptTo, to)
	return nil
}

// Redeliver offers early messages that Deliver refused earlier again.
func (c *Channel) Redeliver() {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	c.drainLocked()
}

func (c *Channel) drainLocked() {
	for {
		next, ok := c.early[c.expected]
		if !ok || !c.cfg.Deliver(next) {
			return
		}
		delete(c.early, c.expected)
		c.deliveredLocked(next)
	}
}

// ack queues the acknowledge for m: seq 0, Flags 3, PayloadType 0 (§7.2).
func (c *Channel) ack(m *Message) error {
	return c.ackSeq(m.MessageType, m.MessageID, m.SequenceNumber)
}

func (c *Channel) ackSeq(typ string, id uuid.UUID, seq int64) error {
	payload, err := json.Marshal(AckContent{
		AcknowledgedMessageType:           typ,
		AcknowledgedMessageID:             id.String(),
		AcknowledgedMessageSequenceNumber: seq,
		IsSequentialMessage:               true,
	})
	if err != nil {
		return fmt.Errorf("encode acknowledge: %w", err)
	}
	a := Message{MessageType: TypeAcknowledge, CreatedDate: uint64(c.cfg.Now().UnixMilli()),
		Flags: HeaderFlagAck, MessageID: c.cfg.NewID(), Payload: payload}
	frame, err := a.Encode(make([]byte, 0, FrameOverhead+len(payload)))
	if err != nil {
		return err
	}
	c.stats.acks.Add(1)
	c.queueControl(frame)
	return nil
}
