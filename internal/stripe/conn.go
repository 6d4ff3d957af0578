package stripe

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStripeLost is wrapped in the Read and Write errors of a Conn one of whose
// stripes failed (I/O error, EOF inside a frame or before the connection
// ended, protocol error) before the connection ended.
var ErrStripeLost = errors.New("stripe lost")

// Options configures a Conn; zero fields take their defaults.
type Options struct {
	Codec      *Codec // nil: never compress; a compressed frame received is then a protocol error
	Compress   bool   // compress outgoing chunks when that pays (needs Codec)
	MaxStripes int    // Add refuses past this many stripes in total (default 8)
	MaxChunk   int    // largest payload per frame before compression (default 32 KiB; cap 256 KiB)
	QueueBytes int    // bytes queued per stripe on the send side before Write blocks (default 128 KiB)

	// Linger bounds how long Close waits for frames already queued (Write
	// and CloseWrite returned) to be written, as a TCP close still sends
	// them. Default 2 s.
	Linger time.Duration

	// Lane: the first stripe is a lane, a path that carries no bulk, so
	// a chunk of at most LaneChunk bytes goes there (a query, its reply,
	// a CREDIT) and a larger one over the other stripes, once there are
	// any. Without Lane every frame takes the least-loaded stripe.
	Lane bool

	// Window bounds what one direction of the connection has in flight:
	// sent but not yet consumed by the peer's Reads, in payload bytes
	// before compression with each frame counted as at least 1 KiB. It is
	// so what a receiver buffers, in order or not. Default 2 MiB, raised
	// to at least 4*MaxChunk. Both ends must use the same value: a peer
	// that sends beyond it is a protocol error.
	Window int
}

func (o Options) withDefaults() Options {
	if o.MaxStripes <= 0 {
		o.MaxStripes = 8
	}
	if o.MaxChunk <= 0 {
		o.MaxChunk = 32 << 10
	}
	o.MaxChunk = min(o.MaxChunk, maxPayload)
	if o.QueueBytes <= 0 {
		o.QueueBytes = 128 << 10
	}
	if o.Window <= 0 {
		o.Window = 2 << 20
	}
	if o.Linger <= 0 {
		o.Linger = 2 * time.Second
	}
	o.Window = max(o.Window, 4*charge(o.MaxChunk)) // see creditDue: progress needs it
	return o
}

// Stats counts a Conn's traffic. BytesIn and BytesOut are payload bytes
// (after decompression, before compression); WireIn and WireOut are bytes on
// the stripes, headers included. FramesOut and FramesIn count data and END
// frames; CreditsOut and CreditsIn count CREDIT frames. Compressed and Raw
// count the data frames sent compressed and uncompressed.
type Stats struct {
	Stripes                                int
	FramesOut, FramesIn, BytesIn, BytesOut int64
	WireIn, WireOut, Compressed, Raw       int64
	CreditsOut, CreditsIn                  int64
}

// stripe is one member byte stream with its send queue.
type stripe struct {
	idx    int // 1-based, for messages
	conn   net.Conn
	cond   *sync.Cond // on Conn.sendMu: the queue has frames or the Conn is done
	queue  [][]byte   // frames (header+payload) not yet handed to the writer
	queued int        // bytes queued but not yet written, including those the writer holds
}

// Conn is one connection's byte stream carried as sequence-numbered frames
// over one or more stripes. It implements net.Conn and CloseWrite.
type Conn struct {
	opts  Options
	first net.Conn
	wg    sync.WaitGroup // the stripes' reader and writer goroutines

	done      chan struct{} // closed when the Conn is shut down (closed or failed)
	closing   chan struct{} // closed when Close is called, before it lingers
	doneOnce  sync.Once
	closeOnce sync.Once
	closed    atomic.Bool  // Close was called
	failErr   atomic.Value // error: why the Conn failed

	readDL, writeDL *deadline

	send sendState
	recv recvState

	framesOut, framesIn, bytesIn, bytesOut atomic.Int64
	wireIn, wireOut, compressed, raw       atomic.Int64
	creditsOut, creditsIn                  atomic.Int64
}

// New returns a Conn whose first stripe is first and starts that stripe's
// goroutines.
func New(first net.Conn, opts Options) *Conn {
	c := &Conn{
		opts:    opts.withDefaults(),
		first:   first,
		done:    make(chan struct{}),
		closing: make(chan struct{}),
		readDL:  newDeadline(),
		writeDL: newDeadline(),
	}
	c.initSend()
	c.initRecv()
	_ = c.Add(first) // cannot fail on a new Conn
	return c
}

// Add joins a further stripe, which then carries frames both ways. It fails
// if the Conn is closed or failed or already has MaxStripes stripes; the
// caller then closes s.
func (c *Conn) Add(s net.Conn) error {
	c.send.mu.Lock()
	defer c.send.mu.Unlock()
	if c.isDone() {
		return fmt.Errorf("stripe: add: %w", net.ErrClosed)
	}
	if len(c.send.stripes) >= c.opts.MaxStripes {
		return fmt.Errorf("stripe: add: already %d stripes (max %d)", len(c.send.stripes), c.opts.MaxStripes)
	}
	st := &stripe{idx: len(c.send.stripes) + 1, conn: s}
	st.cond = sync.NewCond(&c.send.mu)
	c.send.stripes = append(c.send.stripes, st)
	c.wg.Add(2)
	go c.writeLoop(st)
	go c.readLoop(st)
	return nil
}

// Stripes returns the number of stripes joined so far.
func (c *Conn) Stripes() int {
	c.send.mu.Lock()
	defer c.send.mu.Unlock()
	return len(c.send.stripes)
}

// Stats returns the Conn's counters; it works after Close too.
func (c *Conn) Stats() Stats {
	return Stats{
		Stripes:    c.Stripes(),
		FramesOut:  c.framesOut.Load(),
		FramesIn:   c.framesIn.Load(),
		BytesIn:    c.bytesIn.Load(),
		BytesOut:   c.bytesOut.Load(),
		WireIn:     c.wireIn.Load(),
		WireOut:    c.wireOut.Load(),
		Compressed: c.compressed.Load(),
		Raw:        c.raw.Load(),
		CreditsOut: c.creditsOut.Load(),
		CreditsIn:  c.creditsIn.Load(),
	}
}

// Close queues the END frame unless CloseWrite did (as a TCP close sends
// FIN: the peer reads every byte written and then io.EOF), wakes blocked
// Reads and Writes (they return an error wrapping net.ErrClosed), waits up
// to Options.Linger for frames already queued to be written (not at all once the
// write deadline has passed: set one in the past to close at once), closes
// every stripe and waits for the Conn's goroutines to end. Only the first
// call does anything.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true) // first: a Write woken now says closed, not "after CloseWrite"
		c.queueEnd()
		close(c.closing)
		c.linger()
		c.shutdown()
		c.wg.Wait()
		c.readDL.stop()
		c.writeDL.stop()
		c.recv.release()
	})
	return nil
}

// LocalAddr returns the first stripe's local address.
func (c *Conn) LocalAddr() net.Addr { return c.first.LocalAddr() }

// RemoteAddr returns the first stripe's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.first.RemoteAddr() }

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.readDL.set(t)
	c.writeDL.set(t)
	return nil
}

// SetReadDeadline sets the read deadline; one in the past wakes a blocked
// Read at once.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.readDL.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline (how long Write may wait for
// room in the stripes' queues).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDL.set(t)
	return nil
}

func (c *Conn) isDone() bool { return isClosed(c.done) }

// linger waits until every queued frame is written, the Conn is done, the
// write deadline has passed, or Options.Linger has passed.
func (c *Conn) linger() {
	expired := make(chan struct{})
	timer := time.AfterFunc(c.opts.Linger, func() { close(expired) })
	defer timer.Stop()
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	for !c.isDone() && s.queuedTotal() > 0 {
		if !s.waitRoom(c.done, c.writeDL.wait(), expired) {
			return // done, deadline or Linger: whatever is still queued is dropped
		}
	}
}

// shutdown marks the Conn done, closes every stripe and wakes every waiter.
func (c *Conn) shutdown() {
	c.doneOnce.Do(func() {
		close(c.done)
		c.send.mu.Lock()
		stripes := append([]*stripe(nil), c.send.stripes...)
		for _, s := range stripes {
			s.cond.Broadcast()
		}
		c.send.wakeRoom()
		c.send.mu.Unlock()
		var wg sync.WaitGroup
		for _, s := range stripes { // at once: a TLS stripe's close may wait to send its alert
			wg.Go(func() { _ = s.conn.Close() })
		}
		wg.Wait()
	})
}

// fail ends the Conn because stripe s failed with cause.
func (c *Conn) fail(s *stripe, cause error) {
	if c.isDone() {
		return // closed or failed already: the cause is a consequence
	}
	c.failErr.CompareAndSwap(nil, error(&lostError{idx: s.idx, n: c.Stripes(), cause: cause}))
	c.shutdown()
}

// opErr wraps err as net does, so that deadline errors satisfy net.Error.
func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "stripe", Source: c.first.LocalAddr(), Addr: c.first.RemoteAddr(), Err: err}
}

// doneErr is the error of a Read or Write on a done Conn.
func (c *Conn) doneErr(op string) error {
	if err, ok := c.failErr.Load().(error); ok && !c.closed.Load() {
		return c.opErr(op, err)
	}
	return c.opErr(op, net.ErrClosed)
}

// lostError says which stripe failed and why; it is ErrStripeLost.
type lostError struct {
	idx, n int
	cause  error
}

func (e *lostError) Error() string {
	return fmt.Sprintf("stripe %d of %d lost: %v", e.idx, e.n, e.cause)
}

func (e *lostError) Unwrap() error { return e.cause }

func (e *lostError) Is(target error) bool { return target == ErrStripeLost }
