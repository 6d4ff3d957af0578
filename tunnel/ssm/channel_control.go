package ssm

import (
	"context"
	"fmt"
	"sync"
)

// controlQueue holds the acknowledgements the receive path produces until
// Run's writer sends them. Handle never writes
// itself: if both peers' read loops could block on writes while each one's
// TCP buffer toward the other was full, neither would read again and the
// session would stall until a write deadline broke the websocket.
type controlQueue struct {
	mu     sync.Mutex
	frames [][]byte
	limit  int
	ready  chan struct{}
}

func newControlQueue(limit int) *controlQueue {
	return &controlQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues f, or drops it and returns false when the queue is full. A
// dropped ack makes the peer retransmit, and the duplicate is acked again.
func (q *controlQueue) push(f []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) >= q.limit {
		return false
	}
	q.frames = append(q.frames, f)
	signal(q.ready)
	return true
}

// take moves the queued frames to buf and returns it.
func (q *controlQueue) take(buf [][]byte) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	return buf
}

// queueControl hands a receive-path frame to the writer.
func (c *Channel) queueControl(f []byte) {
	if !c.ctrl.push(f) {
		c.stats.controlDropped.Add(1)
	}
}

// writeControl sends queued control frames until the channel closes.
func (c *Channel) writeControl(ctx context.Context) {
	var batch [][]byte
	for {
		select {
		case <-c.ctrl.ready:
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
		batch = c.ctrl.take(batch[:0])
		for _, f := range batch {
			if err := c.cfg.Write(f); err != nil {
				c.Close(fmt.Errorf("send acknowledge: %w", err))
				return
			}
		}
		clear(batch)
	}
}
