package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream"
	corev1 "k8s.io/api/core/v1"
)

const (
	// chunkSize bounds one SPDY data frame written and one read chunk.
	chunkSize = 32 << 10
	// readAhead is how many chunks a stream buffers ahead of its reader
	// (256 KiB), so a slow reader stalls the shared connection later.
	readAhead = 8
	// maxErrorMessage bounds what is read from an error stream.
	maxErrorMessage = 16 << 10
	// replyPoll is the slice in which a stream's reply is awaited before
	// checking for cancellation; replies normally come much sooner.
	replyPoll = 250 * time.Millisecond
)

// StreamError is the error the kubelet (or API server) reported on a
// stream's error stream, e.g. the pod port refusing the connection.
type StreamError struct {
	Pod     string
	Port    int
	Message string
}

func (e *StreamError) Error() string {
	msg := fmt.Sprintf("kube: port-forward to port %d of pod %s failed: %s", e.Port, e.Pod, strings.TrimSpace(e.Message))
	if strings.Contains(e.Message, "connection refused") {
		msg += fmt.Sprintf(" (nothing listens on port %d in the pod: is that the server's container port?)", e.Port)
	}
	return msg
}

// ErrStreamReset is the read error of a stream the server side reset
// before finishing it: the pod went away or its connection is being torn
// down. Best effort: spdystream wakes a reader just before it marks the
// reset, so a reset seen at that instant, or after CloseWrite, reads as EOF.
var ErrStreamReset = errors.New("kube: the port-forward stream was reset by the server")

// ErrConnectionLost is the read error of streams whose port-forward
// connection dropped (pod deleted, API server restarted, network). It is
// also an ErrStreamReset.
var ErrConnectionLost error = &kubeError{kind: ErrStreamReset, msg: "kube: lost the port-forward connection to the pod"}

// openStream creates the error stream, then the data stream, for one new
// requestID on s, as the port-forward protocol defines. The reference on
// s taken by Tunnel.session passes to the returned conn, or is released.
func (t *podTunnel) openStream(ctx context.Context, s *session) (net.Conn, error) {
	id := strconv.FormatInt(s.nextID.Add(1)-1, 10)
	h := http.Header{}
	h.Set(corev1.PortHeader, strconv.Itoa(t.cfg.Port))
	h.Set(corev1.PortForwardRequestIDHeader, id)
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	errs, err := t.createStream(ctx, s, h)
	if err != nil {
		t.release(s)
		return nil, fmt.Errorf("create error stream %s: %w", id, err)
	}
	// The client never writes on the error stream.
	if err := errs.Close(); err != nil {
		resetStreams(errs)
		t.release(s)
		return nil, fmt.Errorf("half-close error stream %s: %w", id, err)
	}
	h = h.Clone()
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := t.createStream(ctx, s, h)
	if err != nil {
		resetStreams(errs)
		t.release(s)
		return nil, fmt.Errorf("create data stream %s: %w", id, err)
	}
	c := newStreamConn(t, s, id, data, errs)
	if err := t.track(c); err != nil {
		resetStreams(errs, data)
		t.release(s)
		return nil, err
	}
	t.log.Debug("kube stream opened", "pod", s.pod, "stream", id, "transport", s.transport)
	return c, nil
}

// createStream opens a stream and waits for the server's reply, bounded by
// ctx and by the connection's life (spdystream's own wait is neither).
func (t *podTunnel) createStream(ctx context.Context, s *session, h http.Header) (*spdystream.Stream, error) {
	if s.dead() {
		return nil, ErrConnectionLost
	}
	st, err := s.conn.CreateStream(h, nil, false)
	if err != nil {
		return nil, err
	}
	replied := make(chan error, 1)
	giveUp := make(chan struct{})
	if !t.spawn(func() { replied <- awaitReply(st, s, giveUp) }) {
		st.Reset()
		return nil, ErrClosed
	}
	select {
	case err := <-replied:
		if err != nil {
			st.Reset()
			return nil, err
		}
		return st, nil
	case <-ctx.Done():
		close(giveUp)
		st.Reset()
		return nil, context.Cause(ctx)
	}
}

// awaitReply waits for the SYN_REPLY (nil) or a RST (error) of st. spdystream
// cannot cancel a wait, so it waits in slices and checks between them
// whether the caller gave up or the connection died; after giving up it
// waits one more slice so a reply racing the reset is still consumed.
func awaitReply(st *spdystream.Stream, s *session, giveUp <-chan struct{}) error {
	for {
		err := st.WaitTimeout(replyPoll)
		if !errors.Is(err, spdystream.ErrTimeout) {
			return err
		}
		select {
		case <-giveUp:
			st.WaitTimeout(replyPoll)
			return context.Canceled
		case <-s.conn.CloseChan():
			return ErrConnectionLost
		default:
		}
	}
}

// resetStreams resets streams; spdystream forgets a reset stream.
func resetStreams(streams ...*spdystream.Stream) {
	for _, st := range streams {
		st.Reset()
	}
}

// track registers c and starts its two goroutines, unless the tunnel is
// closed.
func (t *podTunnel) track(c *streamConn) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.conns[c] = struct{}{}
	t.wg.Go(c.readErrors)
	t.wg.Go(c.pump)
	return nil
}

func (t *podTunnel) untrack(c *streamConn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// streamConn is one data stream as a net.Conn. A pump goroutine reads the
// stream into a small bounded queue so that Read can honour deadlines;
// Write goes to the stream in chunks. CloseWrite half-closes (SPDY FIN).
type streamConn struct {
	t    *podTunnel
	s    *session
	id   string
	data *spdystream.Stream
	errs *spdystream.Stream

	chunks  chan []byte   // filled by pump, closed when the stream ends
	readErr error         // set by pump before closing chunks and over
	over    chan struct{} // closed by pump once readErr is set
	remote  chan error    // one value from readErrors: nil or the reported error
	done    chan struct{}

	readMu  sync.Mutex
	unread  []byte
	writeMu sync.Mutex

	rd, wd    deadline
	wroteFIN  atomic.Bool
	ended     atomic.Bool // the server ended the data stream; we reset it
	closeOnce sync.Once
}

// errEnded is the write error once the server has ended the stream.
var errEnded = errors.New("the server ended the stream")

func newStreamConn(t *podTunnel, s *session, id string, data, errs *spdystream.Stream) *streamConn {
	return &streamConn{
		t: t, s: s, id: id, data: data, errs: errs,
		chunks: make(chan []byte, readAhead),
		over:   make(chan struct{}),
		remote: make(chan error, 1),
		done:   make(chan struct{}),
	}
}

// readErrors reads the error stream to its end. A message marks the
// session suspect, so the next Dial re-checks the pod.
func (c *streamConn) readErrors() {
	msg, err := io.ReadAll(io.LimitReader(c.errs, maxErrorMessage))
	switch {
	case len(msg) > 0:
		c.s.suspect.Store(true)
		c.t.log.Debug("kube stream error reported", "pod", c.s.pod, "stream", c.id, "err", string(msg))
		c.remote <- &StreamError{Pod: c.s.pod, Port: c.t.cfg.Port, Message: string(msg)}
	case err != nil:
		c.remote <- fmt.Errorf("kube: read error stream: %w", err)
	default:
		c.remote <- nil
	}
}

// pump copies the data stream into chunks until it ends, then records why.
func (c *streamConn) pump() {
	defer close(c.over)
	defer close(c.chunks)
	buf := make([]byte, chunkSize)
	for {
		n, err := c.data.Read(buf)
		if n > 0 {
			select {
			case c.chunks <- append([]byte(nil), buf[:n]...):
			case <-c.done:
				c.readErr = net.ErrClosed
				return
			}
		}
		if err != nil {
			c.readErr = c.endReason(err)
			return
		}
	}
}

// endReason decides what a reader sees once the data stream has ended: the
// error the server reported for this stream, a lost connection, a reset,
// or EOF.
//
// As client-go does, a data stream the server has ended is reset at once,
// before the error stream is awaited. The kubelet (and the container
// runtime under it) closes the error stream only when it stops forwarding,
// which it does when both directions have ended or after a grace period
// (containerd 1 s, CRI-O 0.5 s, some never): a reader kept waiting for the
// error stream with our direction still open is held that long, e.g. psql
// in PQcancel until its own deadline.
func (c *streamConn) endReason(err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	// Checked before our own reset marks the stream finished too.
	reset := c.data.IsFinished() && !c.wroteFIN.Load()
	c.ended.Store(true)
	c.data.Reset() // no-op after our FIN: the server has both ends then
	var remote error
	select {
	case remote = <-c.remote:
	case <-c.done:
		return net.ErrClosed
	}
	switch {
	case remote != nil:
		return remote
	case c.s.dead():
		return ErrConnectionLost
	case reset:
		return ErrStreamReset
	}
	return io.EOF
}

func (c *streamConn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(c.unread) == 0 {
		select {
		case b, ok := <-c.chunks:
			if !ok {
				return 0, c.readErr
			}
			c.unread = b
		case <-c.rd.wait():
			return 0, os.ErrDeadlineExceeded
		case <-c.done:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.unread)
	c.unread = c.unread[n:]
	return n, nil
}

// Write sends p in chunks. The deadline is checked between chunks: a chunk
// blocked by back-pressure on the shared connection completes or fails
// with the connection.
func (c *streamConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n := 0
	for len(p) > 0 {
		select {
		case <-c.done:
			return n, net.ErrClosed
		case <-c.wd.wait():
			return n, os.ErrDeadlineExceeded
		default:
		}
		if c.ended.Load() {
			return n, c.endedWriteError()
		}
		k := min(len(p), chunkSize)
		if _, err := c.data.Write(p[:k]); err != nil {
			return n, fmt.Errorf("kube: write to pod %s: %w", c.s.pod, err)
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// endedWriteError is the error of a write after the server ended the
// stream: why it ended (e.g. the kubelet's StreamError) once known, so a
// writer that loses the race with the end learns the same as a reader.
func (c *streamConn) endedWriteError() error {
	select {
	case <-c.over:
	case <-c.done:
		return net.ErrClosed
	case <-c.wd.wait():
		return os.ErrDeadlineExceeded
	}
	if c.readErr != nil && !errors.Is(c.readErr, io.EOF) {
		return c.readErr
	}
	return fmt.Errorf("kube: write to pod %s: %w", c.s.pod, errEnded)
}

// CloseWrite half-closes the stream: the server reads EOF, and can still
// answer. Once the server has ended the stream there is nothing to close.
func (c *streamConn) CloseWrite() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.ended.Load() {
		return nil
	}
	c.wroteFIN.Store(true)
	err := c.data.Close()
	if errors.Is(err, spdystream.ErrWriteClosedStream) && c.ended.Load() {
		return nil // the server ended the stream meanwhile
	}
	return err
}

// Close resets both streams of the pair; the other streams on the
// connection are not affected.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		resetStreams(c.data, c.errs)
		c.rd.stop()
		c.wd.stop()
		c.t.untrack(c)
		c.t.release(c.s)
		c.t.log.Debug("kube stream closed", "pod", c.s.pod, "stream", c.id)
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr  { return addr("rdsproxy-kube-client") }
func (c *streamConn) RemoteAddr() net.Addr { return addr(c.s.pod) }

func (c *streamConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}
func (c *streamConn) SetReadDeadline(t time.Time) error  { c.rd.set(t); return nil }
func (c *streamConn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

// addr names a stream end: the pod for the remote side.
type addr string

func (a addr) Network() string { return "kube-portforward" }
func (a addr) String() string  { return string(a) }

// deadline is a settable point in time exposed as a channel that is closed
// when it passes. The zero value has no deadline.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	gen   uint64 // bumped by set: a timer of an older set does nothing
	ch    chan struct{}
}

func (d *deadline) set(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.ch == nil || isClosed(d.ch) {
		d.ch = make(chan struct{}) // expired before: re-arm
	}
	if at.IsZero() {
		return
	}
	ch, gen := d.ch, d.gen
	wait := time.Until(at)
	if wait <= 0 {
		close(ch)
		return
	}
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

// stopLocked cancels the pending timer; one already firing sees a newer
// generation and does nothing.
func (d *deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
