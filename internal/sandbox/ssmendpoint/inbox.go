package ssmendpoint

import (
	"io"
	"sync"

	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

const inboxSoftLimit = 1 << 20

// item is one client Output payload or a basic-mode flag, in order.
type item struct {
	data []byte
	flag uint32
}

// inbox buffers what the client sent until smux or the basic-mode writer
// takes it. Above the soft limit it refuses new messages (they stay
// unacknowledged and the client retransmits them).
type inbox struct {
	ch       *ssm.Channel
	mu       sync.Mutex
	items    []item
	n        int
	readable chan struct{}
	closed   bool
}

func newInbox(ch *ssm.Channel) *inbox {
	return &inbox{ch: ch, readable: make(chan struct{}, 1)}
}

func (b *inbox) push(it item) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return true
	}
	if b.n >= inboxSoftLimit {
		return false
	}
	b.items = append(b.items, it)
	b.n += len(it.data)
	select {
	case b.readable <- struct{}{}:
	default:
	}
	return true
}

func (b *inbox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	select {
	case b.readable <- struct{}{}:
	default:
	}
}

// next returns the next item, blocking; ok is false once closed.
func (b *inbox) next() (item, bool) {
	for {
		b.mu.Lock()
		if len(b.items) > 0 {
			it := b.items[0]
			b.items[0] = item{}
			b.items = b.items[1:]
			wasFull := b.n >= inboxSoftLimit
			b.n -= len(it.data)
			b.mu.Unlock()
			if wasFull {
				b.ch.Redeliver()
			}
			return it, true
		}
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return item{}, false
		}
		<-b.readable
	}
}

// Read returns buffered bytes (mux mode: there are no flag items).
func (b *inbox) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if len(b.items) > 0 {
			n := 0
			for n < len(p) && len(b.items) > 0 {
				c := copy(p[n:], b.items[0].data)
				n += c
				if c == len(b.items[0].data) {
					b.items[0] = item{}
					b.items = b.items[1:]
				} else {
					b.items[0].data = b.items[0].data[c:]
				}
			}
			wasFull := b.n >= inboxSoftLimit
			b.n -= n
			nowFull := b.n >= inboxSoftLimit
			b.mu.Unlock()
			if wasFull && !nowFull {
				b.ch.Redeliver()
			}
			return n, nil
		}
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return 0, io.EOF
		}
		<-b.readable
	}
}
