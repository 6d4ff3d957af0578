package stripe

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

var errWriteClosed = errors.New("stripe: write after CloseWrite")

// errPeerGone fails Writes once the peer has sent its END and closed every
// stripe: nothing written can reach it, and a Write waiting for its credit
// would wait forever (a relay would then keep its database session, stuck
// writing a result, for as long as the process lives).
var errPeerGone = fmt.Errorf("%w: the peer closed every stripe after its END", ErrStripeLost)

// sendState is the send side: stripes and their queues, guarded by mu.
type sendState struct {
	mu          sync.Mutex
	stripes     []*stripe
	seq         uint64        // next seq to assign
	writeClosed bool          // CloseWrite queued END
	endWritten  bool          // a writer has written END
	peerGone    bool          // the peer closed every stripe after its END: Writes fail
	sent        uint64        // payload bytes (uncompressed) queued in data frames
	credit      uint64        // the most payload bytes the peer has said it consumed
	room        chan struct{} // closed when queued bytes shrink; nil while nobody waits
	turn        int           // where leastLoaded starts looking, advanced on each pick
	bulkSent    bool          // a large Write since the last CREDIT: this side sends bulk too (pick)

	sem  chan struct{} // held by one Write at a time, so that its chunks get consecutive seqs
	comp compressor    // used under sem
}

func (c *Conn) initSend() {
	c.send.sem = make(chan struct{}, 1)
}

// wakeRoom wakes whoever waits in waitRoom, if anyone. Called with mu held.
func (s *sendState) wakeRoom() {
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
}

// waitRoom releases mu until wakeRoom signals that queued bytes shrank or
// credit arrived, or until stop1, stop2 or stop3 is closed; it reports
// whether room woke it. The room channel is made only while someone waits, so that
// writers that find room pay nothing. Called with mu held; returns with it
// held.
func (s *sendState) waitRoom(stop1, stop2, stop3 <-chan struct{}) bool {
	if s.room == nil {
		s.room = make(chan struct{})
	}
	room := s.room
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-room:
		return true
	case <-stop1:
	case <-stop2:
	case <-stop3:
	}
	return false
}

// Write queues p as frames on the stripes and returns len(p) once every
// chunk is queued (not necessarily written). It blocks while the stripes'
// queues are full or the flow-control window is, until the write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	select {
	case c.send.sem <- struct{}{}:
	case <-c.done:
		return 0, c.doneErr("write")
	case <-c.closing:
		return 0, c.doneErr("write")
	case <-c.writeDL.wait():
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	defer func() { <-c.send.sem }()
	n := 0
	for n < len(p) {
		chunk := p[n:min(n+c.opts.MaxChunk, len(p))]
		frame, compressed := c.buildFrame(chunk)
		if err := c.enqueue(frame, 0, len(chunk), len(p)); err != nil {
			putBuf(frame)
			return n, err
		}
		c.bytesOut.Add(int64(len(chunk)))
		if compressed {
			c.compressed.Add(1)
		} else {
			c.raw.Add(1)
		}
		n += len(chunk)
	}
	return n, nil
}

// CloseWrite queues an END frame: the peer's Read returns io.EOF after all
// bytes written so far, and this Conn's Writes fail. Reading goes on. Once
// the peer has gone (errPeerGone) there is no one to tell, and that is no
// error: a relay half-closing after the database's EOF would otherwise
// report a session that ended well as aborted.
func (c *Conn) CloseWrite() error {
	frame := getBuf(headerLen)
	putHeader(frame, 0, 0, 0)
	if err := c.enqueue(frame, flagEnd, 0, 0); err != nil {
		putBuf(frame)
		if errors.Is(err, errPeerGone) {
			return nil
		}
		return err
	}
	return nil
}

// queueEnd queues the END frame for Close, unless CloseWrite did or the
// Conn is done. It waits for nothing: END is outside the window and the
// queue bounds.
func (c *Conn) queueEnd() {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.isDone() || s.writeClosed {
		return
	}
	frame := getBuf(headerLen)
	putHeader(frame, s.seq, flagEnd, 0)
	s.seq++
	s.writeClosed = true
	s.pick(0, c.opts.Lane).push(frame)
}

// buildFrame returns chunk as a frame (header left for enqueue to fill),
// compressed if that pays.
func (c *Conn) buildFrame(chunk []byte) ([]byte, bool) {
	buf := getBuf(headerLen + len(chunk))
	codec := c.opts.Codec
	if c.opts.Compress && codec != nil && c.send.comp.try(len(chunk)) {
		out := codec.encode(buf[:headerLen], chunk)
		shrunk := len(out)-headerLen <= len(chunk)*7/8
		c.send.comp.result(shrunk)
		if shrunk {
			putHeader(out, 0, flagCompressed, len(out)-headerLen)
			return out, true
		}
	}
	copy(buf[headerLen:], chunk)
	putHeader(buf, 0, 0, len(chunk))
	return buf, false
}

// enqueue gives frame, carrying n payload bytes of a Write of write bytes
// (0 for END), the next seq (setting flags extra) and queues it on the
// stripe pick chooses. Unless it is an END
// frame it first waits for room in that stripe's queue and for n bytes of
// window: outstanding (sent minus the peer's credit) plus n must not exceed
// Options.Window; n ≤ MaxChunk ≤ Window/4, so a chunk always fits once the
// peer has consumed what was sent.
func (c *Conn) enqueue(frame []byte, extra byte, n, write int) error {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case c.isDone() || c.closed.Load():
			return c.doneErr("write")
		case s.writeClosed:
			return c.opErr("write", errWriteClosed)
		case s.peerGone:
			return c.opErr("write", errPeerGone)
		case extra == 0 && c.writeDL.expired():
			return c.opErr("write", os.ErrDeadlineExceeded)
		}
		st := s.pick(write, c.opts.Lane)
		fits := st.queued == 0 || st.queued+len(frame) <= c.opts.QueueBytes
		inWindow := s.sent-s.credit+uint64(charge(n)) <= uint64(c.opts.Window)
		if extra != 0 || fits && inWindow {
			frame[8] |= extra
			putSeq(frame, s.seq)
			s.seq++
			if extra&flagEnd != 0 {
				s.writeClosed = true
			} else {
				s.sent += uint64(charge(n))
				s.bulkSent = s.bulkSent || write > LaneChunk
			}
			st.push(frame)
			return nil
		}
		s.waitRoom(c.done, c.closing, c.writeDL.wait()) // whatever woke it, the checks above decide
	}
}

// peerGone makes Writes fail from now on, waiting ones too.
func (c *Conn) peerGone() {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peerGone = true
	s.wakeRoom()
}

// push queues frame on st and wakes its writer. Called with mu held.
func (st *stripe) push(frame []byte) {
	st.queue = append(st.queue, frame)
	st.queued += len(frame)
	st.cond.Signal()
}

// sendCredit queues a CREDIT frame announcing consumed bytes on the
// stripe pick chooses. It never waits: not for queue room, not for window
// (credit is outside the window), and it still goes after CloseWrite, since
// the peer may still be sending. On a closed or failed Conn it does nothing.
func (c *Conn) sendCredit(consumed uint64) {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.isDone() || c.closed.Load() {
		return
	}
	s.pick(0, c.opts.Lane).push(creditFrame(consumed))
	s.bulkSent = false
}

// credited takes the peer's CREDIT: the window reopens up to consumed.
// Credits are cumulative, so the largest one seen counts whatever stripe
// brought it first; one beyond the bytes sent is a protocol error.
func (c *Conn) credited(consumed uint64) error {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	if consumed > s.sent {
		return protoErr("credit for %d bytes but only %d sent", consumed, s.sent)
	}
	if consumed > s.credit {
		s.credit = consumed
		s.wakeRoom()
	}
	return nil
}

func putSeq(frame []byte, seq uint64) {
	putHeader(frame, seq, frame[8], int(frame[9])<<16|int(frame[10])<<8|int(frame[11]))
}

// queuedTotal returns the bytes queued on all stripes. Called with mu held.
func (s *sendState) queuedTotal() int {
	n := 0
	for _, st := range s.stripes {
		n += st.queued
	}
	return n
}

// LaneChunk is the largest Write, in payload bytes before compression,
// whose frame takes the lane (Options.Lane): a query or a reply of a few
// rows. At the SSM agent's 1 KiB per millisecond it holds the lane for
// 4 ms at most. The size of the whole Write before compression decides,
// so that a bulk transfer keeps off the lane entirely: its chunks compress
// to little, and the short last chunk of each large Write (a relay writes
// what it read, thousands of times a second) is bulk too.
const LaneChunk = 4 << 10

// laneBacklog: a small frame joins the lane while fewer bytes than this
// wait there. Past it (a burst of small writes, as a COPY of short rows
// may make), small frames spread over the other stripes like bulk: the
// lane session is shared by every connection's queries.
const laneBacklog = 2 * LaneChunk

// pick returns the stripe for a frame of a Write of write payload bytes
// (0 for END and CREDIT). Without a lane: the least-loaded of all. With
// one: a large Write's frames take the least-loaded other stripe, and a
// small Write's the lane while it is not backed up. END and CREDIT take
// the least-loaded other stripe unless this side has sent bulk since its
// last CREDIT: they then flow against the bulk, whose stripes are idle
// this way, and a connection pulling 130 MB/s sends 250 credits a second,
// which on the lane session made every connection's queries wait (select
// 1 beside a compressed COPY: 2.3-2.6x idle with credits on the lane,
// 2.0-2.2x off it). While this side sends bulk too, its bulk stripes may
// hold far more in their sockets than their queues show, and the credits
// take the lane as before. Called with mu held.
func (s *sendState) pick(write int, lane bool) *stripe {
	if !lane || len(s.stripes) == 1 {
		return s.leastLoaded(s.stripes)
	}
	bulk := s.stripes[1:]
	if write == 0 && !s.bulkSent {
		if st := s.leastLoaded(bulk); st.queued < laneBacklog {
			return st
		}
	}
	if write <= LaneChunk && s.stripes[0].queued < laneBacklog {
		return s.stripes[0]
	}
	if write == 0 {
		return s.leastLoaded(s.stripes)
	}
	return s.leastLoaded(bulk)
}

// leastLoaded returns the stripe of among with the fewest bytes queued,
// taking ties in turn: over TCP a writer hands its queue to the kernel at
// once, so the queues are mostly empty and "the first on ties" sent nearly
// everything over one stripe (8 SSM sessions moved 3.5x one). Called with
// mu held.
func (s *sendState) leastLoaded(among []*stripe) *stripe {
	n := len(among)
	best := among[s.turn%n]
	for i := 1; i < n; i++ {
		if st := among[(s.turn+i)%n]; st.queued < best.queued {
			best = st
		}
	}
	s.turn++
	return best
}

// writeLoop writes stripe st's queue in order until the Conn is done.
func (c *Conn) writeLoop(st *stripe) {
	defer c.wg.Done()
	var batch, scratch [][]byte
	for {
		batch = c.takeQueue(st, batch[:0])
		if batch == nil {
			return
		}
		scratch = append(scratch[:0], batch...) // WriteTo consumes its slice
		bufs := net.Buffers(scratch)
		wire, err := bufs.WriteTo(st.conn)
		c.wireOut.Add(wire)
		if err != nil {
			c.fail(st, err)
			return
		}
		c.written(st, batch)
	}
}

// takeQueue waits for frames on st's queue and moves them into batch; nil
// once the Conn is done.
func (c *Conn) takeQueue(st *stripe, batch [][]byte) [][]byte {
	c.send.mu.Lock()
	defer c.send.mu.Unlock()
	for len(st.queue) == 0 {
		if c.isDone() {
			return nil
		}
		st.cond.Wait()
	}
	if c.isDone() {
		return nil
	}
	batch = append(batch, st.queue...)
	clear(st.queue)
	st.queue = st.queue[:0]
	return batch
}

// written accounts for frames written on st and recycles their buffers.
func (c *Conn) written(st *stripe, batch [][]byte) {
	n, end, credits := 0, false, 0
	for _, f := range batch {
		n += len(f)
		end = end || f[8]&flagEnd != 0
		if f[8]&flagCredit != 0 {
			credits++
		}
		putBuf(f)
	}
	c.framesOut.Add(int64(len(batch) - credits))
	c.creditsOut.Add(int64(credits))
	c.send.mu.Lock()
	st.queued -= n
	if end {
		c.send.endWritten = true
	}
	c.send.wakeRoom()
	c.send.mu.Unlock()
}

// compressor decides whether a chunk is worth compressing: after 4 chunks
// in a row that did not shrink to 7/8, it skips the next 16 chunks, then 32,
// ... up to 256 after each further failed try; a chunk that shrinks resets it.
type compressor struct {
	misses int // consecutive chunks that did not shrink
	skip   int // chunks still to send without trying
	next   int // length of the next skip period
}

const (
	minCompress  = 512
	missesToSkip = 4
	firstSkip    = 16
	maxSkip      = 256
)

// try reports whether a chunk of n bytes should be compressed.
func (p *compressor) try(n int) bool {
	if n < minCompress {
		return false
	}
	if p.skip > 0 {
		p.skip--
		return false
	}
	return true
}

// result records whether the last try shrank.
func (p *compressor) result(shrunk bool) {
	if shrunk {
		*p = compressor{}
		return
	}
	p.misses++
	if p.misses < missesToSkip {
		return
	}
	if p.next == 0 {
		p.next = firstSkip
	}
	p.skip = p.next
	p.next = min(2*p.next, maxSkip)
	p.misses = missesToSkip - 1 // after a skip, one more miss skips again
}
