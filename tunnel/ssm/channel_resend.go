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

// maxResendsPerRound bounds the work of one retransmission round.
const maxResendsPerRound = 256

// Run sends acknowledgements and retransmits unacknowledged messages until
// ctx ends or the channel is closed.
func (c *Channel) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.writeControl(ctx) }()
	c.retransmit(ctx)
	wg.Wait()
}

// retransmit resends overdue messages. Unlike the reference plugin it
// resends every overdue message (not only the oldest), doubles the timeout
// per resend of a message, updates the last-sent time, and gives up after
// GiveUp.
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
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// resendDue resends overdue messages and returns the time until the next one
// is due, or pending=false when nothing is unacknowledged.
func (c *Channel) resendDue() (wait time.Duration, pending bool) {
	now := c.cfg.Now()
	var frames [][]byte
	c.mu.Lock()
	wait = maxRTO
	for seq := c.oldest; seq < c.nextSeq && len(frames) < maxResendsPerRound; seq++ {
		om := c.unacked[seq]
		if om == nil {
			continue
		}
		pending = true
		if now.Sub(om.firstSent) > c.cfg.GiveUp {
			c.mu.Unlock()
			c.Close(fmt.Errorf("message %d unacknowledged for %s: %w", seq, c.cfg.GiveUp, ErrNotAcknowledged))
			return 0, false
		}
		due := om.lastSent.Add(c.rtt.timeout(om.resends))
		if d := due.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		om.resends++
		om.lastSent = now
		frames = append(frames, om.frame)
		wait = min(wait, c.rtt.timeout(om.resends))
	}
	if len(frames) == maxResendsPerRound {
		wait = 0
	}

	c.mu.Unlock()
	for _, f := range frames {
		c.stats.resent.Add(1)
		if err := c.cfg.Write(f); err != nil {
			c.Close(fmt.Errorf("resend: %w", err))
			return 0, false
		}
	}
	return wait, pending
}
