package relay

import (
	"errors"
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
// (see setAside). It does nothing without Options.CancelAnswer and Aside.
func (s *Session) CancelSent() { s.cancelAt.Store(time.Now().UnixNano()) }

// asideDue reports whether a cancel was sent since the last call, recently
// enough to be in effect, and f can follow the stream.
func (s *Session) asideDue(f *framer) bool {
	if s.cancelAt.Load() == 0 { // nearly always: a plain load, no write on the copy's path
		return false
	}
	at := s.cancelAt.Swap(0)
	return at != 0 && time.Since(time.Unix(0, at)) < s.asideFor &&
		s.opts.CancelAnswer != nil && s.opts.Aside != nil && !f.broken
}

// setAside copies b→a after a cancel. A backend blocked on a full socket
// acts on a cancel only once it can write again, so a client that reads
// slowly (SSM forwards about 1 MB/s) would first take the megabytes queued
// on the way: psql's Ctrl-C over SSM took 4-6 s. Instead, what ends the
// message a is inside goes to a, and then rows (DataRow, COPY out's
// CopyData) and notices are read at b's pace and kept back. If the next
// other message is the cancel's ErrorResponse (Options.CancelAnswer), what
// was kept back is dropped and a gets the error: the statement ends for a
// as if the cancel had come that much earlier. After anything else (the
// result ended first: the cancel came too late), and when asideMax, the
// shared Budget or defaultAsideFor runs out, or b's stream ends, a gets
// everything in order. After Stop, what was kept back is dropped and the
// final message written: the session ends before the statement.
//
// It returns the error that ended reading b (nil when the copy goes on),
// or the error of a write to a (errStopped after Stop).
func (s *Session) setAside(cr *chunkReader, f *framer, write func([]byte) error) (rerr, werr error) {
	s.setHoldDeadline(time.Now().Add(s.asideFor))
	defer s.setHoldDeadline(time.Time{})
	kept := &aside{budget: s.opts.Aside}
	defer kept.free()
	send := func(p []byte) error {
		s.noteIdle(f)
		return write(p)
	}
	errAt := -1 // where in kept the ErrorResponse after the rows begins
	for {
		chunk, rerr := cr.next()
		rest := chunk
		if kept.size == 0 && !f.atBoundary() { // a is inside a message: the rest of it first
			k := f.feedWhile(rest, never)
			if err := send(rest[:k]); err != nil {
				return nil, err
			}
			rest = rest[k:]
		}
		if errAt < 0 && len(rest) > 0 {
			k := f.feedWhile(rest, f.rowOrNotice)
			if k < len(rest) && rest[k] == 'E' {
				errAt = kept.size + k
				k += f.feedOne(rest[k:])
			}
			if n := kept.add(rest[:k]); n < k || errAt < 0 && k < len(rest) {
				return rerr, s.endAside(kept, 0, rest[n:k], rest[k:], f, send)
			}
			rest = rest[k:]
		}
		if errAt >= 0 && len(rest) > 0 { // the rest of the ErrorResponse
			k := f.feedWhile(rest, never)
			if n := kept.add(rest[:k]); n < k {
				return rerr, s.endAside(kept, 0, rest[n:k], rest[k:], f, send)
			}
			rest = rest[k:]
		}
		switch {
		case errAt >= 0 && f.atBoundary(): // the ErrorResponse is whole
			from := 0
			if s.opts.CancelAnswer(f.lastWord()) {
				from = errAt
				s.dropped += int64(from)
			}
			return rerr, s.endAside(kept, from, nil, rest, f, send)
		case f.broken:
			return rerr, s.endAside(kept, 0, nil, nil, f, send)
		case rerr == nil:
		case s.stopping.Load() && kept.size > 0: // a is at the boundary where kept begins
			<-s.stopSet
			s.a.Write(s.final)
			return nil, errStopped
		case errors.Is(rerr, os.ErrDeadlineExceeded) && !s.stopping.Load(): // asideFor has passed
			return nil, s.endAside(kept, 0, nil, nil, f, send)
		default:
			return rerr, s.endAside(kept, 0, nil, nil, f, send)
		}
	}
}

// endAside writes to a what kept holds from from on, then fed, which f has
// followed already, then unfed, which it has not.
func (s *Session) endAside(kept *aside, from int, fed, unfed []byte, f *framer, send func([]byte) error) error {
	for p := range kept.from(from) {
		if err := send(p); err != nil {
			return err
		}
	}
	if len(fed) > 0 {
		if err := send(fed); err != nil {
			return err
		}
	}
	if len(unfed) == 0 {
		return nil
	}
	f.feed(unfed)
	return send(unfed)
}

func never(byte) bool { return false }

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
func (a *aside) from(off int) func(yield func([]byte) bool) {
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
