package stripe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// recvState is the receive side, guarded by mu.
type recvState struct {
	mu       sync.Mutex
	next     uint64     // seq of the next frame to deliver in order
	ready    []*inFrame // in-order data not yet read
	readyLen int        // bytes in ready
	pending  map[uint64]*inFrame
	heldLen  int    // bytes in pending (out of order)
	maxBuf   int    // the most readyLen+heldLen ever was (for tests)
	endSeq   uint64 // seq of the END frame, when endSeen
	endSeen  bool   // the END frame has arrived (maybe out of order)
	eof      bool   // the END frame's seq was reached
	owed     int    // charge (see charge) of the frames in ready and pending
	consumed uint64 // charge of the frames Read has returned in full
	credited uint64 // consumed as of the last CREDIT frame sent
	quiet    int    // stripes the peer closed cleanly (EOF between frames)

	data chan struct{} // signalled when ready grows or eof is reached
	sem  chan struct{} // held by one Read at a time
}

func (c *Conn) initRecv() {
	r := &c.recv
	r.pending = make(map[uint64]*inFrame)
	r.data = make(chan struct{}, 1)
	r.sem = make(chan struct{}, 1)
}

var errDone = errors.New("conn done")

// readLoop reads stripe st's frames and files them until the stripe ends.
// It never waits for anything but the stripe: several stripes of different
// Conns may share one multiplexed session (smux over SSM) whose buffer is
// per session, so a stripe left unread would stall the others' stripes too.
func (c *Conn) readLoop(st *stripe) {
	defer c.wg.Done()
	var hdr [headerLen]byte
	for {
		f, err := readFrame(st.conn, c.opts.Codec, &hdr)
		if err != nil {
			c.stripeEnded(st, err)
			return
		}
		c.wireIn.Add(int64(f.wire))
		if f.credit {
			c.creditsIn.Add(1)
			if err := c.credited(f.consumed); err != nil {
				c.fail(st, err)
				return
			}
			continue
		}
		c.framesIn.Add(1)
		c.bytesIn.Add(int64(len(f.data)))
		if err := c.file(f); err != nil {
			putBuf(f.data)
			if err != errDone {
				c.fail(st, err)
			}
			return
		}
	}
}

// stripeEnded handles the end of stripe st's frames. A clean EOF (between
// frames) only says the peer sends nothing more on st: the peer closes its
// stripes one by one, and its END may still be on its way on another. The
// Conn is lost when every stripe ended cleanly before the END arrived, or
// when one fails any other way (an error, EOF inside a frame) before both
// directions ended (the peer's END received, this side's END written).
func (c *Conn) stripeEnded(st *stripe, err error) {
	if c.isDone() {
		return
	}
	c.recv.mu.Lock()
	eof := c.recv.eof // END reached in order: every byte before it arrived
	if err == io.EOF {
		c.recv.quiet++
	}
	quiet := c.recv.quiet
	c.recv.mu.Unlock()
	c.send.mu.Lock()
	endWritten := c.send.endWritten
	stripes := len(c.send.stripes)
	c.send.mu.Unlock()
	switch {
	case err == io.EOF && eof && quiet == stripes && !endWritten:
		c.peerGone() // it sent everything and closed every stripe: it reads no more
		return
	case err == io.EOF && (eof || quiet < stripes):
		return
	case err == io.EOF:
		err = errors.New("every stripe ended before the connection did")
	case eof && endWritten:
		return
	}
	c.fail(st, err)
}

// file accepts frame f into the in-order data or holds it out of order, at
// once: the sender keeps within the window, so the bytes buffered here stay
// bounded without the reader ever waiting. A peer that sends more than the
// window (with one chunk of slack) is a protocol error.
func (c *Conn) file(f *inFrame) error {
	r := &c.recv
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.isDone() {
		return errDone
	}
	if err := r.check(f); err != nil {
		return err
	}
	owed := r.owed + charge(len(f.data))
	if owed > c.opts.Window+c.opts.MaxChunk {
		return protoErr("peer exceeded the flow-control window: %d bytes unread, window %d", owed, c.opts.Window)
	}
	r.owed = owed
	r.maxBuf = max(r.maxBuf, owed)
	if f.seq == r.next {
		r.deliver(f)
	} else {
		r.hold(f)
	}
	return nil
}

// check reports frame f as a protocol error if its seq was seen already or
// does not fit the END frame. Called with mu held.
func (r *recvState) check(f *inFrame) error {
	if _, dup := r.pending[f.seq]; dup || f.seq < r.next {
		return protoErr("duplicate or past seq %d (next %d)", f.seq, r.next)
	}
	if r.endSeen && (f.end || f.seq > r.endSeq) {
		return protoErr("frame %d after END frame %d", f.seq, r.endSeq)
	}
	if f.end {
		for seq := range r.pending {
			if seq > f.seq {
				return protoErr("END frame %d before frame %d", f.seq, seq)
			}
		}
	}
	return nil
}

// hold keeps an out-of-order frame. Called with mu held.
func (r *recvState) hold(f *inFrame) {
	if f.end {
		r.endSeen, r.endSeq = true, f.seq
	}
	r.pending[f.seq] = f
	r.heldLen += len(f.data)
}

// deliver appends the frame with seq next, and the held frames that follow
// it, to the in-order data. Called with mu held.
func (r *recvState) deliver(f *inFrame) {
	for f != nil {
		delete(r.pending, f.seq)
		r.next++
		if f.end {
			r.endSeen, r.endSeq, r.eof = true, f.seq, true
		} else {
			r.ready = append(r.ready, f)
			r.readyLen += len(f.data)
		}
		f = r.pending[r.next]
		if f != nil {
			r.heldLen -= len(f.data)
		}
	}
	select {
	case r.data <- struct{}{}:
	default:
	}
}

// Read reads bytes in seq order. It returns io.EOF once the peer's END
// frame is reached, and honours the read deadline.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.lockRead(); err != nil {
		return 0, err
	}
	defer func() { <-c.recv.sem }()
	for {
		n, ok, credit, err := c.tryRead(p)
		if credit != 0 {
			c.sendCredit(credit)
		}
		if ok {
			return n, err
		}
		select {
		case <-c.recv.data:
		case <-c.done:
		case <-c.closing:
		case <-c.readDL.wait():
		}
	}
}

// lockRead takes the Read semaphore: at once if it is free (tryRead then
// decides what a done Conn returns), else waiting for it, the deadline or
// the end of the Conn.
func (c *Conn) lockRead() error {
	select {
	case c.recv.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.recv.sem <- struct{}{}:
		return nil
	case <-c.done:
		return c.doneErr("read")
	case <-c.closing:
		return c.doneErr("read")
	case <-c.readDL.wait():
		return c.opErr("read", os.ErrDeadlineExceeded)
	}
}

// tryRead reads what is there; ok is false when Read must wait. credit,
// when not 0, is a CREDIT to send (after mu is released).
func (c *Conn) tryRead(p []byte) (n int, ok bool, credit uint64, err error) {
	r := &c.recv
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case c.closed.Load():
		return 0, true, 0, c.doneErr("read")
	case c.readDL.expired():
		return 0, true, 0, c.opErr("read", os.ErrDeadlineExceeded)
	case len(p) == 0:
		return 0, true, 0, nil
	case len(r.ready) > 0: // what arrived in order before a failure is delivered too
		n = r.copyOut(p)
		return n, true, r.creditDue(c.opts.Window), nil
	case c.isDone() && !r.eof:
		return 0, true, 0, c.doneErr("read") // failed before the peer's END
	case r.eof:
		return 0, true, 0, io.EOF
	}
	return 0, false, 0, nil
}

// creditDue returns the consumed count to announce in a CREDIT frame, or 0
// when none is due: once consumed has advanced by Window/4 since the last
// one, and not after the peer's END (it sends no more data). Called with mu
// held.
//
// Why this threshold cannot stall the sender: its Write waits only while
// outstanding+charge(n) > Window, with charge(n) ≤ Window/4 (withDefaults), so
// only while outstanding > 3/4 Window. Every byte sent arrives (the readers
// never stop reading), so once the application has read it all, consumed
// equals the bytes sent, and the unannounced part, consumed - credited, is
// under Window/4 (else a CREDIT would have gone). The last CREDIT sent
// arrives too, so the sender's outstanding falls under Window/4 < 3/4
// Window: it is not blocked. The sender is thus blocked only while the
// application has not read, which is the flow control we want.
func (r *recvState) creditDue(window int) uint64 {
	if r.endSeen || r.consumed-r.credited < uint64(window/4) {
		return 0
	}
	r.credited = r.consumed
	return r.consumed
}

// copyOut moves in-order bytes into p. Called with mu held.
func (r *recvState) copyOut(p []byte) int {
	n := 0
	for n < len(p) && len(r.ready) > 0 {
		f := r.ready[0]
		k := copy(p[n:], f.data[f.off:])
		n += k
		f.off += k
		if f.off == len(f.data) {
			r.owed -= charge(len(f.data))
			r.consumed += uint64(charge(len(f.data)))
			putBuf(f.data)
			r.ready[0] = nil
			r.ready = r.ready[1:]
		}
	}
	r.readyLen -= n
	return n
}

// release returns the buffers still held to the pool (after Close).
func (r *recvState) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.ready {
		putBuf(f.data)
	}
	for _, f := range r.pending {
		putBuf(f.data)
	}
	r.ready, r.pending, r.readyLen, r.heldLen, r.owed = nil, map[uint64]*inFrame{}, 0, 0, 0
}

// String describes the receive state (for test failures).
func (r *recvState) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("next %d, ready %d bytes, held %d frames %d bytes, owed %d, consumed %d, credited %d",
		r.next, r.readyLen, len(r.pending), r.heldLen, r.owed, r.consumed, r.credited)
}
