package relay

import (
	"errors"
	"iter"
	"os"
	"sync/atomic"
	"time"
)

// After a cancel, rows and notices are set aside for at most
// defaultAsideFor and asideMax bytes a session.
const (
	defaultAsideFor = 2 * time.Second
	asideMax        = 16 << 20
)

// Budget bounds the bytes that the sessions sharing it set aside after
// cancels, all together (Options.Aside).
type Budget struct{ left atomic.Int64 }

// NewBudget returns a Budget of n bytes.
func NewBudget(n int64) *Budget {
	b := &Budget{}
	b.left.Store(n)
	return b
}

func (b *Budget) take(n int) bool {
	if b.left.Add(-int64(n)) >= 0 {
		return true
	}
	b.left.Add(int64(n))
	return false
}

func (b *Budget) give(n int) { b.left.Add(int64(n)) }

// CancelSent tells s that its owner has had b's backend cancel what it
// runs: the backend has the cancel, and what it sends from now on may end
// with the cancel's error. The copy to a then sets rows and notices aside
// (see setAside), until asideFor after this call at the latest. It does
// nothing without Options.CancelAnswer and Aside.
func (s *Session) CancelSent() { s.cancelAt.Store(int64(time.Since(s.born)) + 1) }

// asideUntil returns, when a cancel was sent since the last call and f can
// follow the stream, until when to set aside: asideFor after the cancel.
func (s *Session) asideUntil(f *framer) (time.Time, bool) {
	if s.cancelAt.Load() == 0 { // nearly always: a plain load, no write on the copy's path
		return time.Time{}, false
	}
	at := s.cancelAt.Swap(0)
	until := s.born.Add(time.Duration(at-1) + s.asideFor)
	due := at != 0 && time.Now().Before(until) && s.opts.CancelAnswer != nil && s.opts.Aside != nil && !f.broken
	return until, due
}

// setAside copies b→a after a cancel. A backend blocked on a full socket
// acts on a cancel only once it can write again, so a client that reads
// slowly (SSM forwards about 1 MB/s) would first take the megabytes queued
// on the way: psql's Ctrl-C over SSM took 6 s and more. Instead, what ends
// the message a is inside goes to a, and then rows (DataRow, COPY out's
// CopyData) and notices are read at b's pace and kept back. If the next
// other message is the cancel's ErrorResponse (Options.CancelAnswer), what
// was kept back is dropped and a gets the error: the statement ends for a
// as if the cancel had come that much earlier. After anything else (the
// result ended first: the cancel came too late), when asideMax or the
// shared Budget runs out, at until, or when b's stream ends, a gets
// everything in order. Once Stop has begun, what was kept back is dropped
// and the final message written: the session ends before the statement.
//
// It returns the error that ended reading b (nil when the copy goes on:
// toA's Stop check then writes Stop's final message if it is due), or the
// error of a write to a (errStopped when it wrote Stop's final message).
func (s *Session) setAside(cr *chunkReader, f *framer, write func([]byte) error, until time.Time) (rerr, werr error) {
	s.setHoldDeadline(until)
	defer s.setHoldDeadline(time.Time{})
	send := func(p []byte) error {
		s.noteIdle(f)
		return write(p)
	}
	k := &keeper{s: s, f: f, send: send, kept: aside{budget: s.opts.Aside}, finishing: !f.atBoundary(), errAt: -1}
	defer k.kept.free()
	for {
		var chunk []byte
		chunk, rerr = cr.next()
		if s.stopping.Load() && k.kept.size > 0 {
			return nil, s.stopAside()
		}
		// Past until a read may still return bytes, with the deadline's
		// error: they are b's, and the session goes on.
		timedOut := errors.Is(rerr, os.ErrDeadlineExceeded) && !s.stopping.Load()
		if timedOut {
			rerr = nil
		}
		if done, err := k.take(chunk); done {
			return rerr, err
		}
		switch {
		case s.stopping.Load() && k.kept.size > 0:
			return nil, s.stopAside()
		case timedOut:
			return nil, k.end(0, nil, nil)
		case rerr != nil: // b's stream ended, or Stop began before anything was kept
			return rerr, k.end(0, nil, nil)
		}
	}
}

// stopAside ends a set-aside after Stop: a is at the boundary where what
// was kept begins, so the final message goes there, and what was kept is
// dropped. It returns errStopped.
func (s *Session) stopAside() error {
	<-s.stopSet
	s.a.Write(s.final)
	return errStopped
}

// keeper is what setAside keeps back, and where b's stream is.
type keeper struct {
	s         *Session
	f         *framer
	send      func([]byte) error // to a
	kept      aside
	finishing bool // a is inside a message: its rest goes to a before anything is kept
	errAt     int  // where in kept the ErrorResponse after the rows begins; -1 before it
}

// take follows p, a chunk from b, a message at a time: the rest of the
// message a is inside goes to a, then rows and notices are kept, and the
// ErrorResponse after them. It reports done, having written to a what the
// end calls for, when that ErrorResponse is whole, when a message of any
// other type begins, when a bound is reached, or when the framing breaks;
// and, with the error, when a write to a failed.
func (k *keeper) take(p []byte) (done bool, err error) {
	if k.finishing && len(p) > 0 {
		n := k.f.feedOne(p)
		if err := k.send(p[:n]); err != nil {
			return true, err
		}
		p, k.finishing = p[n:], !k.f.atBoundary()
	}
	for len(p) > 0 && !k.f.broken {
		if k.errAt < 0 && k.f.atBoundary() { // a message begins
			switch {
			case p[0] == 'E':
				k.errAt = k.kept.size
			case !k.f.rowOrNotice(p[0]):
				return true, k.end(0, nil, p)
			}
		}
		n := k.f.feedOne(p)
		if added := k.kept.add(p[:n]); added < n { // asideMax or the Budget
			return true, k.end(0, p[added:n], p[n:])
		}
		p = p[n:]
		if k.errAt >= 0 && k.f.atBoundary() { // the ErrorResponse is whole
			return true, k.end(k.dropping(), nil, p)
		}
	}
	if k.f.broken {
		return true, k.end(0, nil, nil)
	}
	return false, nil
}

// dropping returns how much of kept to drop, now that the ErrorResponse
// after the rows is whole: the rows, when it is the cancel's answer.
func (k *keeper) dropping() int {
	if !k.s.opts.CancelAnswer(k.f.lastWord()) {
		return 0
	}
	k.s.dropped += int64(k.errAt)
	return k.errAt
}

// end writes to a what kept holds from from on, then fed, which f has
// followed already, then unfed, which it has not.
func (k *keeper) end(from int, fed, unfed []byte) error {
	for p := range k.kept.from(from) {
		if err := k.send(p); err != nil {
			return err
		}
	}
	if len(fed) > 0 {
		if err := k.send(fed); err != nil {
			return err
		}
	}
	if len(unfed) == 0 {
		return nil
	}
	k.f.feed(unfed)
	return k.send(unfed)
}

// rowOrNotice reports whether a message of type typ, beginning now, may be
// set aside: a DataRow, a NoticeResponse, or a COPY out's CopyData.
func (f *framer) rowOrNotice(typ byte) bool {
	return typ == 'D' || typ == 'N' || typ == 'd' && f.copyOut
}

// aside holds what setAside keeps back, in pooled buffers, within asideMax
// and its Budget.
type aside struct {
	budget *Budget
	bufs   []*[]byte
	size   int // bytes held
}

// add copies what of p fits and returns how much that was.
func (a *aside) add(p []byte) int {
	added := 0
	for len(p) > 0 {
		if a.size == len(a.bufs)*coalesceSize { // the last buffer is full
			if a.size+coalesceSize > asideMax || !a.budget.take(coalesceSize) {
				break
			}
			a.bufs = append(a.bufs, coalescePool.Get().(*[]byte))
		}
		k := copy((*a.bufs[len(a.bufs)-1])[a.size%coalesceSize:], p)
		a.size += k
		added += k
		p = p[k:]
	}
	return added
}

// from yields the bytes held from offset off on, in order.
func (a *aside) from(off int) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for i, b := range a.bufs {
			start, end := i*coalesceSize, min((i+1)*coalesceSize, a.size)
			if end <= off {
				continue
			}
			if !yield((*b)[max(off-start, 0) : end-start]) {
				return
			}
		}
	}
}

// free gives the buffers back.
func (a *aside) free() {
	for _, b := range a.bufs {
		coalescePool.Put(b)
	}
	a.budget.give(len(a.bufs) * coalesceSize)
	a.bufs, a.size = nil, 0
}
