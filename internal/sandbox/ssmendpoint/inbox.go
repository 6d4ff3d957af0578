package ssmendpoint

import (
	"io"
	"sync"
	"time"
)

// inboxLimit bounds client bytes waiting for smux or the destination; a
// full inbox blocks the read loop, as the agent's blocking socket write
// does.
const inboxLimit = 1 << 20

// item is one client Output payload or a basic-mode flag, in order.
type item struct {
	data []byte
	flag uint32
}

// inbox buffers what the client sent until smux or the basic-mode writer
// takes it. Reads are paced like the agent's pumps when pace is set.
type inbox struct {
	pace     bool
	mu       sync.Mutex
	items    []item
	n        int
	readable chan struct{}
	space    chan struct{}
	closed   bool
}

func newInbox(pace bool) *inbox {
	return &inbox{pace: pace, readable: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push adds it, blocking while the inbox is full.
func (b *inbox) push(it item) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		if b.n < inboxLimit {
			b.items = append(b.items, it)
			b.n += len(it.data)
			b.mu.Unlock()
			wake(b.readable)
			return
		}
		b.mu.Unlock()
		<-b.space
	}
}

func (b *inbox) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	wake(b.readable)
	wake(b.space)
}

// next returns the next item, blocking; ok is false once closed.
func (b *inbox) next() (item, bool) {
	for {
		b.mu.Lock()
		if len(b.items) > 0 {
			it := b.items[0]
			b.items[0] = item{}
			b.items = b.items[1:]
			b.n -= len(it.data)
			b.mu.Unlock()
			wake(b.space)
			b.sleep()
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

func (b *inbox) sleep() {
	if b.pace {
		time.Sleep(time.Millisecond) // the agent's pump: 1 ms per read
	}
}

// Read returns buffered bytes (mux mode: there are no flag items), at most
// one agent read (1 KiB) at a time when paced.
func (b *inbox) Read(p []byte) (int, error) {
	if b.pace && len(p) > agentReadSize {
		p = p[:agentReadSize]
	}
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
			b.n -= n
			b.mu.Unlock()
			wake(b.space)
			b.sleep()
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
