package ssm

import (
	"context"
	"io"
	"os"
	"sync"
	"time"
)

const (
	// DefaultMaxPayload is the Output payload size the plugin and agent use.
	DefaultMaxPayload = 1024
	// pipeSoftLimit bounds buffered incoming bytes: above it new in-order
	// messages are refused (not acked, so the agent retransmits them).
	pipeSoftLimit = 4 << 20
)

// dataPipe is the byte stream smux (or a basic-mode connection) runs over:
// Write cuts bytes into Output messages on the Channel; Read returns the
// agent's Output payloads in sequence order.
type dataPipe struct {
	ch         *Channel
	ctx        context.Context // the session's lifetime
	maxPayload int

	wmu      sync.Mutex // one Write at a time: smux frames and probes stay whole
	mu       sync.Mutex
	bufs     [][]byte
	n        int
	readable chan struct{} // cap 1: data arrived or pipe closed
	closed   bool
	err      error
	rdl, wdl time.Time // deadlines (basic mode)
}

func newDataPipe(ctx context.Context, ch *Channel, maxPayload int) *dataPipe {
	return &dataPipe{ch: ch, ctx: ctx, maxPayload: maxPayload, readable: make(chan struct{}, 1)}
}

// push takes one Output payload. force skips the soft limit (for messages
// that were already acknowledged as early messages).
func (p *dataPipe) push(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return true // nobody will read it; accept so the agent stops resending
	}
	if p.n >= pipeSoftLimit {
		return false
	}
	p.bufs = append(p.bufs, b)
	p.n += len(b)
	signal(p.readable)
	return true
}

// Read returns buffered agent bytes, blocking until some arrive.
func (p *dataPipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if p.n > 0 {
			n := p.take(b)
			wasFull := p.n+n >= pipeSoftLimit && p.n < pipeSoftLimit
			p.mu.Unlock()
			if wasFull {
				p.ch.Redeliver()
			}
			return n, nil
		}
		if p.closed {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		dl := p.rdl
		p.mu.Unlock()
		if err := p.wait(dl); err != nil {
			return 0, err
		}
	}
}

func (p *dataPipe) take(b []byte) int {
	n := 0
	for n < len(b) && len(p.bufs) > 0 {
		c := copy(b[n:], p.bufs[0])
		n += c
		if c == len(p.bufs[0]) {
			p.bufs[0] = nil
			p.bufs = p.bufs[1:]
		} else {
			p.bufs[0] = p.bufs[0][c:]
		}
	}
	p.n -= n
	return n
}

func (p *dataPipe) wait(deadline time.Time) error {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-p.readable:
		return nil
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
}

// Write sends b as Output messages of at most maxPayload bytes, blocking
// while the channel's window is full.
func (p *dataPipe) Write(b []byte) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	ctx := p.ctx
	p.mu.Lock()
	dl := p.wdl
	p.mu.Unlock()
	if !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	n := 0
	for n < len(b) {
		end := min(len(b), n+p.maxPayload)
		if err := p.ch.Send(ctx, PayloadOutput, b[n:end]); err != nil {
			if ctx.Err() == context.DeadlineExceeded && p.ctx.Err() == nil {
				err = os.ErrDeadlineExceeded
			}
			return n, err
		}
		n = end
	}
	return n, nil
}

// closeWith ends the pipe: readers get err after the buffered bytes.
func (p *dataPipe) closeWith(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if err == nil {
		err = io.EOF
	}
	p.closed, p.err = true, err
	signal(p.readable)
}

// Close implements io.Closer for smux; the session owns the real shutdown.
func (p *dataPipe) Close() error {
	p.closeWith(io.ErrClosedPipe)
	return nil
}

// discard drops buffered bytes (basic mode, between connections).
func (p *dataPipe) discard() {
	p.mu.Lock()
	wasFull := p.n >= pipeSoftLimit
	p.bufs, p.n = nil, 0
	p.mu.Unlock()
	if wasFull {
		p.ch.Redeliver()
	}
}

func (p *dataPipe) setDeadlines(r, w *time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r != nil {
		p.rdl = *r
		signal(p.readable) // wake a blocked reader to re-check
	}
	if w != nil {
		p.wdl = *w
	}
}
