package ssm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNotAcknowledged means the peer stopped acknowledging messages.
var ErrNotAcknowledged = errors.New("peer stopped acknowledging messages")

const (
	// maxResendsPerRound bounds the work of one retransmission round.
	maxResendsPerRound = 256
	// probeEvery spaces probes (NeedsProbe).
	probeEvery = time.Second
)

// Run sends acknowledgements and retransmits unacknowledged messages until
// ctx ends or the channel is closed.
func (c *Channel) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.writeControl(ctx) }()
	c.retransmit(ctx)
	wg.Wait()
}

// retransmit resends overdue messages, and those a fast retransmit marked.
// Unlike the reference plugin it resends every overdue message (not only
// the oldest), doubles the timeout per resend of a message, updates the
// last-sent time, and gives up when no acknowledgement at all arrived for
// GiveUp while messages wait.
func (c *Channel) retransmit(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait, pending := c.resendDue()
		if !pending {
			select {
			case <-c.kick:
				continue
			case <-c.done:
				return
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-c.kick: // a fast retransmit, or a new path
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// resendDue resends overdue messages, and the oldest one at once when a fast
// retransmit marked it, and returns the time until the next one is due, or
// pending=false when nothing is unacknowledged.
func (c *Channel) resendDue() (wait time.Duration, pending bool) {
	now := c.cfg.Now()
	var due []*outMsg
	c.mu.Lock()
	if c.pathDown { // NewPath kicks the loop when the path is back
		c.mu.Unlock()
		return 0, false
	}
	if n := len(c.unacked); n > 0 && now.Sub(c.progress) > c.cfg.GiveUp {
		oldest := c.oldest
		c.mu.Unlock()
		c.Close(fmt.Errorf("no acknowledgement for %s while %d messages wait (oldest %d): %w", c.cfg.GiveUp, n, oldest, ErrNotAcknowledged))
		return 0, false
	}
	wait = maxRTO
	timedOut := false
	for seq := c.oldest; seq < c.nextSeq && len(due) < maxResendsPerRound; seq++ {
		om := c.unacked[seq]
		if om == nil {
			continue
		}
		pending = true
		if d := om.lastSent.Add(c.rtt.timeout(om.resends)).Sub(now); d > 0 && !om.fast {
			wait = min(wait, d)
			continue
		}
		timedOut = timedOut || !om.fast
		due = append(due, om)
		wait = min(wait, c.rtt.timeout(om.resends+1))
	}
	if timedOut {
		c.rtt.backoff()
	}
	if len(due) == maxResendsPerRound {
		wait = 0
	}
	c.mu.Unlock()
	for _, om := range due {
		if err := c.resend(om); err != nil {
			return 0, false
		}
	}
	if len(due) > 0 {
		signal(c.space) // a Send waiting on a full window may now carry the proof (fullLocked)
	}
	return wait, pending
}

// resend writes om again unless it was released meanwhile or the path is
// down (NewPath resends it at once on the new path). Like Send, it
// stamps the message and writes it under sendMu, so the order of lastSent
// is the order on the wire: proveLocked takes the ack of a message sent
// after a resend as proof that the resend arrived, which holds only if
// the resend was written first. (Stamped under mu and written after it,
// a resend could be overtaken by a fresh Send whose ack then "proved" it.)
func (c *Channel) resend(om *outMsg) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	if c.unacked[om.seq] != om || c.pathDown {
		c.mu.Unlock()
		return nil
	}
	c.markResentLocked(om, c.cfg.Now())
	c.mu.Unlock()
	c.stats.resent.Add(1)
	if err := c.cfg.Write(om.frame); err != nil {
		err = fmt.Errorf("resend message %d: %w", om.seq, err)
		c.Close(err)
		return err
	}
	return nil
}

// PathDown tells the channel that its websocket is lost and being resumed:
// until NewPath it neither resends (the frames would be dropped) nor gives
// up, since the time a resume takes (its own attempts and budget) says
// nothing about whether the peer still acknowledges. Without this, a
// resume slower than GiveUp (a loaded machine, a slow ResumeSession) ended
// a session whose websocket had just come back.
func (c *Channel) PathDown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pathDown = true
}

// NewPath tells the channel that frames now travel over a new websocket,
// which swap installs: proofs of delivery (proveLocked) never span two
// paths, and the new path gets a full GiveUp. Overdue messages are resent
// at once. swap runs while no sequenced message is being stamped or
// written (under sendMu), so a message stamped with the old path's
// generation never goes out on the new websocket, where its ack would
// "prove" a resend lost with the old one.
func (c *Channel) NewPath(swap func()) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	swap()
	c.mu.Lock()
	c.gen++
	c.pathDown = false
	c.progress = c.cfg.Now()
	c.mu.Unlock()
	signal(c.kick)
}

// NeedsProbe reports, at most once per probeEvery, whether the session
// should send a probe (any message the peer acks): when messages wait and
// nothing was acknowledged for probeEvery, so the give-up only ever ends a
// channel whose peer left several probes unanswered; or when a resent
// message waits with no newer message sent after its last resend to show
// whether it arrived (an idle stream, or a lost ack from an agent that
// does not re-ack duplicates).
func (c *Channel) NeedsProbe() bool {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.lastProbe) < probeEvery || c.pathDown {
		return false
	}
	if len(c.unacked) > 0 && now.Sub(c.progress) >= probeEvery {
		c.lastProbe = now
		return true
	}
	for _, m := range c.resent {
		if c.awaitsProofLocked(m) {
			c.lastProbe = now
			return true
		}
	}
	return false
}

// awaitsProofLocked reports whether the resent message m waits with no
// message sent for the first time after its last resend: only the ack of
// such a message can show that the resend arrived (proveLocked).
func (c *Channel) awaitsProofLocked(m *outMsg) bool {
	return m.provenAt != m.resends && !c.lastFresh.After(m.lastSent)
}
