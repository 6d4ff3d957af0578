// Package relay is the one byte relay both proxies use once startup is
// over: bytes already read while routing are written first, then both
// directions are copied until each side has finished, with half-close
// propagated so that a client that goes away ends its upstream promptly.
//
// When both ends are *net.TCPConn, io.Copy uses splice(2) and no user-space
// buffer, except where the owner must see the bytes (Options). Otherwise
// each direction borrows a pooled buffer. A Session can
// also follow the PostgreSQL message framing of the stream towards a (the
// client) so that its owner can end it with a final message written between
// two backend messages, never inside one; and, once its owner has had the
// backend cancel a statement (CancelSent), drop the rows and notices the
// backend sent before the cancel's error: the one case in which the relay
// does not forward every byte (see Session.setAside).
//
// docs/architecture.md §5 shows where a session reaches it.
package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is one TLS record's worth of plaintext.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// defaultStopGrace bounds the wait for the rest of the message the stream
// towards a is inside, once the copy has reached it after Stop.
// StopLimit bounds, from Stop, the writes to a: a client that keeps
// reading, however slowly, takes what is already on its way to it (a slow
// reader through SSM has megabytes of it in socket buffers) and then the
// final message; one that reads nothing is closed then. A single deadline,
// not one moved on with each write's progress: a TLS connection whose
// write timed out is broken for good.
// A process that stops its sessions (the server's drain) needs StopLimit
// more before it exits; its supervisor's grace must allow for it.
const (
	defaultStopGrace = 2 * time.Second
	StopLimit        = 8 * time.Second
)

// errStopped ends the copy loops after Stop.
var errStopped = errors.New("relay stopped by its owner")

// Result counts the bytes each way, including replayed bytes.
type Result struct {
	// ToB is bytes written to b (read from a plus pendingToB);
	// ToA is bytes written to a (read from b plus pendingToA).
	ToB, ToA int64
	// Err is the first error that was not a clean end of stream.
	Err error
	// Stopped is true when the owner ended the session with Stop.
	Stopped bool
	// EndedBy is the side whose end of stream (EOF) came first and ended
	// the session; Neither when Stop or an error ended it.
	EndedBy Side
	// LastWord, with FrameToA: when the copy from b ended on b's EOF or a
	// read error (not Stop) right after a whole ErrorResponse or
	// NoticeResponse, the start of its body, up to LastWordLen bytes; nil
	// otherwise. It holds the SQLSTATE of the FATAL with which PostgreSQL
	// ends a session (pg_terminate_backend, an idle timeout, a shutdown) or
	// of the WARNING with which the postmaster ends it (an immediate
	// shutdown, another backend's crash); but also, when the client left
	// right after an ERROR it had no ReadyForQuery for, that ERROR's.
	LastWord []byte
	// DroppedToA is the bytes of rows and notices that b sent before its
	// answer to a cancel and that were dropped (see Session.setAside).
	DroppedToA int64
}

// Side is one of a session's two connections.
type Side uint8

const (
	Neither Side = iota
	SideA
	SideB
)

// Options change how a Session copies.
type Options struct {
	// FrameToA: the bytes towards a are PostgreSQL backend messages.
	// Stop then writes its final message only at a message boundary, and
	// rows that arrive a buffer at a time are written in large chunks.
	FrameToA bool
	// EndedToB, when set, is called when a's stream has ended the copy
	// a→b (EOF, a read error, or Stop), with the last bytes written to b,
	// up to TailLen; the copy a→b then never uses splice(2), which would
	// move them unseen. The owner can tell from them how a's stream
	// ended: a PostgreSQL client that says goodbye ends with a Terminate
	// message. idle says, with FrameToA, that b had answered everything:
	// its last message was a ReadyForQuery and a sent nothing after it.
	// It is not called when the copy ended because b's side ended first
	// (the session then closes a) or a write to b failed; after Stop it
	// always is. It runs on the copy's goroutine; Run waits for it.
	EndedToB func(tail []byte, idle bool)
	// Lost, with FrameToA, gives the message (a FATAL ErrorResponse, say)
	// to write to a when reading b fails with an error, not an EOF: the
	// upstream went away without a word. It is written only at a message
	// boundary, not after an ErrorResponse (b said why already), and not
	// after Stop.
	Lost func(err error) []byte
	// CancelAnswer and Aside, both set with FrameToA, make CancelSent
	// work (see setAside). CancelAnswer reports whether an ErrorResponse
	// whose body begins with word (up to LastWordLen bytes) is b's answer
	// to a cancel; Aside bounds what the sessions sharing it set aside.
	CancelAnswer func(word []byte) bool
	Aside        *Budget
}

// lostWriteTime bounds the write of Options.Lost's message to a client
// that may not be reading.
const lostWriteTime = time.Second

// TailLen is the most Options.EndedToB is given: a Terminate message.
const TailLen = 5

// Session relays between a and b until both directions end or Stop.
type Session struct {
	a, b      net.Conn
	opts      Options
	holdFor   time.Duration // see hold
	asideFor  time.Duration // see setAside
	pause     time.Duration // see bulkPause
	stopGrace time.Duration // see defaultStopGrace
	stopLimit time.Duration // see StopLimit
	stopping  atomic.Bool
	final     []byte        // set by Stop before stopSet closes
	stopAt    time.Time     // when Stop began; read after stopSet closes
	stopSet   chan struct{} // closed once Stop has set its deadlines
	lastWord  []byte        // Result.LastWord, set by toA
	dropped   int64         // Result.DroppedToA, counted by toA
	sentToB   atomic.Int64  // bytes written to b, counted with EndedToB
	idleAt    atomic.Int64  // sentToB when b's stream last reached a ReadyForQuery, or -1
	born      time.Time     // when New made it: CancelSent's clock
	cancelAt  atomic.Int64  // 1 + the time from born to the last CancelSent, until toA takes it; 0: none
	endedBy   atomic.Uint32 // Result.EndedBy: the first side whose EOF ended its copy (endedFirst)
}

// New prepares a session; Run starts it.
func New(a, b net.Conn, opts Options) *Session {
	return &Session{a: a, b: b, opts: opts, holdFor: defaultHoldFor, asideFor: defaultAsideFor, pause: bulkPause, stopGrace: defaultStopGrace, stopLimit: StopLimit,
		born: time.Now(), stopSet: make(chan struct{})}
}

// Relay runs a plain session: see Session.Run.
func Relay(a, b net.Conn, pendingToB, pendingToA []byte) Result {
	return New(a, b, Options{}).Run(pendingToB, pendingToA)
}

// Run writes pendingToB to b and pendingToA to a, then copies a→b and b→a
// until both directions end. When one direction reaches EOF the other side
// is half-closed (CloseWrite) so the peer sees the end too; on any error
// both connections are closed. Run closes a and b before it returns, and
// does not return before both copy goroutines have ended.
func (s *Session) Run(pendingToB, pendingToA []byte) Result {
	var res Result
	var errOnce sync.Once
	fail := func(err error) {
		if !isClosed(err) && !errors.Is(err, errStopped) && !s.stopping.Load() {
			errOnce.Do(func() { res.Err = err })
		}
		if !s.stopping.Load() { // after Stop, the b→a loop closes both
			s.a.Close()
			s.b.Close()
		}
	}
	idleAt := int64(-1) // unknown without the framing
	if s.opts.FrameToA {
		idleAt = 0 // the login ended with b's ReadyForQuery, and a has sent nothing since
	}
	s.idleAt.Store(idleAt)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var t *tail
		if s.opts.EndedToB != nil {
			t = &tail{sent: &s.sentToB}
		}
		n, err := pipe(s.b, s.a, pendingToB, t, func() { s.endedFirst(SideA) })
		// After Stop, a's read ends with Stop's deadline or, when the b→a
		// loop has already closed a, with the close: a's stream ended
		// either way.
		if t != nil && (t.srcEnded || s.stopping.Load()) {
			s.opts.EndedToB(t.bytes(), s.idleAt.Load() == s.sentToB.Load())
		}
		res.ToB = n
		if err != nil {
			fail(err)
		}
	}()
	n, err := s.toA(pendingToA)
	res.ToA = n
	if err != nil {
		fail(err)
	}
	s.a.Close()
	s.b.Close()
	wg.Wait()
	res.Stopped, res.EndedBy = s.stopping.Load(), Side(s.endedBy.Load())
	if res.Stopped || res.Err != nil {
		res.EndedBy = Neither
	}
	res.LastWord, res.DroppedToA = s.lastWord, s.dropped
	return res
}

// Stop ends the session: final (e.g. a FATAL ErrorResponse) is written to
// a at the next message boundary of the b→a stream, then both sides close.
// A message the stream is inside is forwarded to its end first, if that
// arrives within defaultStopGrace; otherwise, and without FrameToA, the session
// closes without final. Rows and notices set aside after a cancel are
// dropped, and final goes where they began. Writes to a have until
// StopLimit after Stop. Stop does not wait; a later Stop changes nothing.
func (s *Session) Stop(final []byte) {
	if s.stopping.Swap(true) {
		return // the first Stop's final stands: the session ends for its reason
	}
	s.final = final
	s.stopAt = time.Now()
	s.a.SetReadDeadline(s.stopAt)
	s.b.SetReadDeadline(s.stopAt)
	s.a.SetWriteDeadline(s.stopAt.Add(s.stopLimit))
	close(s.stopSet)
}

// BufferedReader is a connection that can also hand over, without
// blocking, what it has already received (a TLS connection's records,
// decrypted from what its socket holds). The copy from it then coalesces
// those bytes into one write: fewer writes and wake-ups downstream on the
// bulk path, and nothing added on the request/response path (see chunkReader).
type BufferedReader interface {
	ReadBuffered(p []byte) (int, error)
}

// Buffer sizes of the coalescing copy: an idle session waits with a small
// buffer of its own and borrows a large one only while bytes flow.
const (
	firstReadSize = 2 << 10
	coalesceSize  = 64 << 10
)

var coalescePool = sync.Pool{New: func() any { b := make([]byte, coalesceSize); return &b }}

// toA copies b→a; with FrameToA it follows message boundaries for Stop,
// and sets rows and notices aside after a cancel (setAside).
func (s *Session) toA(pending []byte) (int64, error) {
	if !s.opts.FrameToA {
		return pipe(s.a, s.b, pending, nil, func() { s.endedFirst(SideB) })
	}
	var f framer
	var n int64
	write := func(p []byte) error {
		w, err := s.a.Write(p)
		n += int64(w)
		return err
	}
	f.feed(pending)
	if len(pending) > 0 { // else b is still as idle as its login left it (Run)
		s.noteIdle(&f)
		if err := write(pending); err != nil {
			return n, err
		}
	}
	cr := newChunkReader(s.b)
	defer cr.close()
	ranOut := false // the last hold ended on its deadline: rows trickle
	for {
		var chunk []byte
		var rerr error
		if until, due := s.asideUntil(&f); due {
			var werr error
			if rerr, werr = s.setAside(cr, &f, write, until); werr != nil {
				return n, werr
			}
		} else {
			chunk, rerr = s.read(cr, &f, &ranOut)
		}
		if len(chunk) > 0 {
			s.noteIdle(&f) // before a hears a ReadyForQuery and answers it
			if werr := write(chunk); werr != nil {
				return n, werr
			}
		}
		if s.stopping.Load() {
			return n, s.finish(&f, write)
		}
		if rerr != nil {
			s.lastWord = bytes.Clone(f.lastWord())
		}
		if rerr == io.EOF {
			s.endedFirst(SideB)
			return n, closeWrite(s.a)
		}
		if rerr != nil {
			s.sayLost(&f, rerr)
			return n, rerr
		}
	}
}

// read returns b's next chunk for a, fed to f: within rows, held for more
// to arrive (see hold) unless the last hold ran out.
func (s *Session) read(cr *chunkReader, f *framer, ranOut *bool) ([]byte, error) {
	chunk, err := cr.next()
	f.feed(chunk)
	if err == nil && f.midRows() && cr.growable(chunk) {
		chunk, err = s.hold(cr, f, chunk, f.inBulk(bulkAfter) && !*ranOut)
	}
	// Still room after a hold: it ran out. Any other chunk (full, or not
	// in rows) says nothing of a trickle.
	*ranOut = err == nil && f.midRows() && cr.growable(chunk)
	return chunk, err
}

// sayLost writes Options.Lost's message for err to a when it can go
// between two messages and b has not said why itself.
func (s *Session) sayLost(f *framer, err error) {
	if s.opts.Lost == nil || isClosed(err) || s.stopping.Load() || !f.atBoundary() || f.last == 'E' {
		return
	}
	s.a.SetWriteDeadline(time.Now().Add(lostWriteTime))
	s.a.Write(s.opts.Lost(err))
}

// Idle reports whether b had answered everything a sent it (its last
// message a ReadyForQuery, and nothing sent to it since), as far as the
// copies have gone; false when the session cannot tell (without FrameToA
// and EndedToB). A PostgreSQL backend ignores a cancel then.
func (s *Session) Idle() bool {
	return s.opts.FrameToA && s.opts.EndedToB != nil && s.idleAt.Load() == s.sentToB.Load()
}

// noteIdle records, when b has sent more, whether b's stream as far as f
// has followed it ends with a ReadyForQuery: b is then idle until a sends
// more. Only EndedToB reads it, so without one nothing is recorded.
func (s *Session) noteIdle(f *framer) {
	switch {
	case s.opts.EndedToB == nil: // no one asks
	case f.atBoundary() && f.last == 'Z':
		s.idleAt.Store(s.sentToB.Load())
	default:
		s.idleAt.Store(-1)
	}
}

// finish ends the copy b→a after Stop: the rest of the message the stream
// is inside is forwarded if it arrives within the grace Stop gave, then
// final is written at the boundary. It returns errStopped.
func (s *Session) finish(f *framer, write func([]byte) error) error {
	<-s.stopSet
	if !f.atBoundary() {
		s.b.SetReadDeadline(s.graceEnd())
		if err := s.completeMessage(f, write); err != nil {
			return errStopped
		}
	}
	if f.atBoundary() {
		s.a.Write(s.final)
	}
	return errStopped
}

// graceEnd is the deadline for the rest of a message after Stop (once
// stopSet has closed): stopGrace from now, but not past stopLimit from Stop.
func (s *Session) graceEnd() time.Time {
	next, limit := time.Now().Add(s.stopGrace), s.stopAt.Add(s.stopLimit)
	if next.After(limit) {
		return limit
	}
	return next
}

// completeMessage forwards from b to a exactly the bytes that end the
// message the stream is inside, and nothing after them.
func (s *Session) completeMessage(f *framer, write func([]byte) error) error {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for need := f.toBoundary(); need > 0; need = f.toBoundary() {
		r, err := s.b.Read((*buf)[:min(need, len(*buf))])
		f.feed((*buf)[:r])
		if r > 0 {
			if werr := write((*buf)[:r]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// defaultHoldFor bounds how long a chunk that ends inside a query's rows or
// a COPY out waits for more to fill its buffer (see hold).
const defaultHoldFor = 2 * time.Millisecond

// bulkPause: within a bulk stream (bulkAfter bytes of rows or COPY data
// without another message between them), a hold first lets this long pass
// and then takes in one read what has arrived, instead of waking for each
// of PostgreSQL's 8 KiB buffers as they come. Before bulkAfter a result
// pays nothing (a pause from the second chunk on made a 256 KiB result
// 0.6 ms slower, 2.31 instead of 1.69 ms); after it, the result's end may
// wait out one pause (an otherwise idle Go process sleeps about 1 ms for
// it). Rows that trickle, so that the last hold ran out before its
// buffer filled, are not paused for: the pause would only add to the wait.
const (
	bulkPause = 500 * time.Microsecond
	bulkAfter = 1 << 20
)

// hold fills chunk's buffer with what arrives from b within holdFor, while
// the stream stays inside rows. PostgreSQL sends rows when its 8 KiB output
// buffer fills, and a result ends with a message that is not a row, so more
// is nearly always on its way without the client saying anything (the
// exceptions: a client that pipelines Execute without Sync or Flush, and a
// BASE_BACKUP's progress message while MAX_RATE throttles; each waits at
// most holdFor, plus the pause in a bulk stream). A relay with a core to
// itself (the server on its instance) otherwise reads and writes each of
// those buffers as it arrives: one 64 KiB write instead of eight halves
// the proxies' CPU for a COPY out and wakes every hop downstream once
// (make bench -pin: 390 ms instead of 890 ms of CPU per 100 MiB). The wait
// is bounded because a slow query may take long to fill its next buffer.
// With pause it begins with s.pause (see bulkPause).
func (s *Session) hold(cr *chunkReader, f *framer, chunk []byte, pause bool) ([]byte, error) {
	if pause {
		time.Sleep(s.pause)
		before := len(chunk)
		var err error
		chunk, err = cr.gather(chunk) // what arrived during the pause
		f.feed(chunk[before:])
		if err != nil || !cr.growable(chunk) || !f.midRows() {
			return chunk, err // no deadline to set: nothing more to wait for
		}
	}
	s.setHoldDeadline(time.Now().Add(s.holdFor)) // after the pause, which the scheduler may stretch
	defer s.setHoldDeadline(time.Time{})
	for cr.growable(chunk) && f.midRows() {
		before := len(chunk)
		var err error
		chunk, err = cr.extend(chunk)
		f.feed(chunk[before:])
		if errors.Is(err, os.ErrDeadlineExceeded) && !s.stopping.Load() {
			return chunk, nil // nothing more in time: send what there is
		}
		if err != nil || len(chunk) == before {
			return chunk, err
		}
	}
	return chunk, nil
}

// setHoldDeadline sets b's read deadline to t unless Stop has begun, whose
// own deadline (now) must stand whichever of the two was set first.
func (s *Session) setHoldDeadline(t time.Time) {
	s.b.SetReadDeadline(t)
	if s.stopping.Load() {
		s.b.SetReadDeadline(time.Now())
	}
}

// chunkReader reads a copy's chunks from src. Each chunk blocks for the
// first bytes into a small buffer; when they fill it and src can say what
// else has already arrived (moreFrom), the chunk takes that too, up to
// coalesceSize, so that one write carries it. Anything else is read
// through a pooled buffer.
type chunkReader struct {
	src   net.Conn
	more  func(p []byte) (int, error) // nil: src cannot say what has arrived
	first []byte                      // small, so an idle session holds little
	big   *[]byte                     // from coalescePool while a chunk is in it
	plain *[]byte                     // from bufPool when more is nil
}

func newChunkReader(src net.Conn) *chunkReader {
	c := &chunkReader{src: src, more: moreFrom(src)}
	if c.more == nil {
		c.plain = bufPool.Get().(*[]byte)
	} else {
		c.first = make([]byte, firstReadSize)
	}
	return c
}

// next returns the next chunk, valid until the next call.
func (c *chunkReader) next() ([]byte, error) {
	if c.more == nil {
		r, err := c.src.Read(*c.plain)
		return (*c.plain)[:r], err
	}
	c.releaseBig() // the previous chunk has been written
	r, err := c.src.Read(c.first)
	if r < len(c.first) || err != nil {
		return c.first[:r], err
	}
	c.big = coalescePool.Get().(*[]byte)
	return c.gather((*c.big)[:copy(*c.big, c.first[:r])])
}

// growable reports whether chunk is in the large buffer with room left,
// where extend can add to it.
func (c *chunkReader) growable(chunk []byte) bool {
	return c.big != nil && len(chunk) < len(*c.big)
}

// extend waits for more bytes after a coalesced chunk and appends them.
func (c *chunkReader) extend(chunk []byte) ([]byte, error) {
	buf := *c.big
	m, err := c.src.Read(buf[len(chunk):])
	return buf[:len(chunk)+m], err
}

// gather appends to chunk, in the large buffer, what src has already
// received, without waiting.
func (c *chunkReader) gather(chunk []byte) ([]byte, error) {
	buf := *c.big
	n := len(chunk)
	for n < len(buf) {
		m, err := c.more(buf[n:])
		n += m
		if err != nil {
			return buf[:n], err
		}
		if m == 0 {
			break
		}
	}
	return buf[:n], nil
}

func (c *chunkReader) releaseBig() {
	if c.big != nil {
		coalescePool.Put(c.big)
		c.big = nil
	}
}

func (c *chunkReader) close() {
	c.releaseBig()
	if c.plain != nil {
		bufPool.Put(c.plain)
		c.plain = nil
	}
}

// pipe copies src to dst after writing pending, then, at src's EOF, calls
// atEOF and half-closes dst. A non-nil t keeps the last bytes written.
func pipe(dst, src net.Conn, pending []byte, t *tail, atEOF func()) (int64, error) {
	var n int64
	if len(pending) > 0 {
		t.sending(len(pending))
		w, err := dst.Write(pending)
		n += int64(w)
		t.add(pending[:w])
		if err != nil {
			return n, err
		}
	}
	c, err := copyConn(dst, src, t)
	n += c
	if err != nil {
		// Includes net.ErrClosed: the owner closed a connection to end
		// the session, so both directions must end now.
		return n, err
	}
	atEOF()
	return n, closeWrite(dst)
}

// endedFirst records side as the one whose end of stream ended the
// session, unless the other's came first. Each copy calls it on its
// source's EOF before it half-closes the other side: the peer that hears
// the half-close may answer with its own end at once, and that must not
// be taken for the first.
func (s *Session) endedFirst(side Side) { s.endedBy.CompareAndSwap(uint32(Neither), uint32(side)) }

// copyConn copies src to dst until EOF: splice(2) between two TCP
// connections unless t must see the bytes, else coalesced chunks.
func copyConn(dst, src net.Conn, t *tail) (int64, error) {
	if d, ok := dst.(*net.TCPConn); ok && t == nil {
		if s, ok := src.(*net.TCPConn); ok {
			return d.ReadFrom(s) // splice
		}
	}
	cr := newChunkReader(src)
	defer cr.close()
	var n int64
	for {
		chunk, rerr := cr.next()
		if len(chunk) > 0 {
			t.sending(len(chunk))
			w, werr := dst.Write(chunk)
			n += int64(w)
			t.add(chunk[:w])
			if werr != nil {
				return n, werr
			}
		}
		if rerr != nil {
			t.ended(rerr)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// tail keeps the last TailLen bytes of a stream, and whether a read from
// the source ended it. Its methods do nothing on a nil *tail.
type tail struct {
	b        [TailLen]byte
	n        int
	sent     *atomic.Int64 // counts every byte written (sending)
	srcEnded bool          // the source's EOF or read error ended the copy, not a close by the session
}

// sending counts n bytes about to be written: counted before the write,
// so that b's answer to them can never be seen before they are.
func (t *tail) sending(n int) {
	if t != nil {
		t.sent.Add(int64(n))
	}
}

func (t *tail) add(p []byte) {
	if t == nil {
		return
	}
	if len(p) >= TailLen {
		t.n = copy(t.b[:], p[len(p)-TailLen:])
		return
	}
	keep := min(t.n, TailLen-len(p))
	copy(t.b[:], t.b[t.n-keep:t.n])
	t.n = keep + copy(t.b[keep:], p)
}

// ended records the read error (io.EOF included) that ended the copy.
func (t *tail) ended(err error) {
	if t != nil {
		t.srcEnded = !isClosed(err)
	}
}

// bytes returns the tail.
func (t *tail) bytes() []byte { return t.b[:t.n] }

// closeWrite half-closes conn when it can, else closes it. A socket the
// peer has already closed and reset (PostgreSQL closes as soon as it reads
// Terminate, and resets when the close_notify that follows arrives) is
// no longer connected: the half-close has nothing left to do, and the
// session did not fail.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !isClosed(err) && !errors.Is(err, errNotConnected) {
			return err
		}
		return nil
	}
	return c.Close()
}

// isClosed reports errors that only mean a connection was already closed.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
