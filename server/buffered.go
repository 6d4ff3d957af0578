package server

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"

	"github.com/rdsproxy/rdsproxy/internal/relay"
)

// bufferedTLS is an upstream TLS connection that can hand the relay, without
// blocking, the records that have already arrived: PostgreSQL sends records
// of at most 8 KiB, so during a COPY out several are usually waiting, in
// TLS's buffer or in the socket. See relay.BufferedReader.
//
// Towards the database it sends the records of one Write in one socket
// write: crypto/tls writes each record (at most 16 KiB) on its own, so a
// relay chunk of 64 KiB during a COPY in would otherwise cost four.
type bufferedTLS struct {
	*tls.Conn
	raw *holdableConn
}

var _ relay.BufferedReader = (*bufferedTLS)(nil)

func newBufferedTLS(raw net.Conn, cfg *tls.Config) *bufferedTLS {
	h := &holdableConn{Conn: raw, readNow: relay.ReadNow(raw)}
	return &bufferedTLS{Conn: tls.Client(h, cfg), raw: h}
}

// Write encrypts p and sends its records in one socket write.
func (c *bufferedTLS) Write(p []byte) (int, error) {
	if len(p) <= maxRecordPayload {
		return c.Conn.Write(p) // one record: nothing to gather
	}
	c.raw.gather()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// CloseWrite ends what the relay sends: TLS's close_notify, then a
// half-close of the socket. The database sees the end as a socket event
// too, which is what client_connection_check_interval looks for; a
// close_notify alone leaves the socket open both ways.
func (c *bufferedTLS) CloseWrite() error {
	if err := c.Conn.CloseWrite(); err != nil {
		return err
	}
	if cw, ok := c.raw.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// maxRecordPayload is the most plaintext one TLS record carries.
const maxRecordPayload = 16 << 10

// ReadBuffered returns what TLS can decrypt from bytes that have already
// arrived, and 0 when it would have to wait for the socket.
func (c *bufferedTLS) ReadBuffered(p []byte) (int, error) {
	c.raw.held.Store(true)
	defer c.raw.held.Store(false)
	n, err := c.Conn.Read(p)
	if err == errWouldBlock {
		err = nil
	}
	return n, err
}

// holdableConn is a connection whose reads can be held: a held Read never
// waits; it returns what the socket has already received, read ahead in a
// gulp of up to 64 KiB, or errWouldBlock. TLS asks only for what one
// record lacks, so without the gulp a held read could hand over only the
// records TLS happened to have buffered. Its writes can be gathered:
// between gather and flush they are kept, then sent in one write.
type holdableConn struct {
	net.Conn
	held    atomic.Bool
	readNow func(p []byte) (int, error) // relay.ReadNow; nil when the connection is not a socket: nothing is read ahead
	ahead   readAhead

	wmu      sync.Mutex
	gathered *[]byte // non-nil between gather and flush
}

// maxGathered bounds the buffers kept for gathering: a relay chunk (64 KiB)
// plus its records' overhead fits.
const maxGathered = 80 << 10

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, maxGathered); return &b }}

func (c *holdableConn) gather() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := gatherPool.Get().(*[]byte)
	*b = (*b)[:0]
	c.gathered = b
}

// flush sends what was gathered and stops gathering.
func (c *holdableConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.gathered
	c.gathered = nil
	_, err := c.Conn.Write(*b)
	if cap(*b) <= maxGathered { // an unusually large Write's buffer is left to the GC
		gatherPool.Put(b)
	}
	return err
}

func (c *holdableConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.gathered != nil {
		*c.gathered = append(*c.gathered, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Read is called by TLS only, under its input lock. An unheld read waits
// in a plain read into TLS's own buffer, so an idle session holds no gulp.
func (c *holdableConn) Read(p []byte) (int, error) {
	switch {
	case c.ahead.len() > 0:
		return c.ahead.read(p), nil
	case !c.held.Load():
		return c.Conn.Read(p)
	case c.readNow == nil:
		return 0, errWouldBlock
	}
	n, err := c.ahead.fill(c.readNow)
	if n == 0 && err == nil {
		err = errWouldBlock
	}
	return c.ahead.read(p), err
}

// gulpSize is the most one read ahead takes from the socket: a relay chunk.
const gulpSize = 64 << 10

var gulpPool = sync.Pool{New: func() any { b := make([]byte, gulpSize); return &b }}

// readAhead holds bytes read from the socket before TLS asked for them, in
// a pooled gulp that goes back to the pool once they have all been read.
type readAhead struct {
	gulp *[]byte
	r, w int
}

func (a *readAhead) len() int { return a.w - a.r }

// fill reads into an empty readAhead what the socket holds, without waiting.
func (a *readAhead) fill(readNow func(p []byte) (int, error)) (int, error) {
	a.gulp = gulpPool.Get().(*[]byte)
	n, err := readNow(*a.gulp)
	a.r, a.w = 0, n
	a.releaseIfRead()
	return n, err
}

func (a *readAhead) read(p []byte) int {
	if a.gulp == nil {
		return 0
	}
	n := copy(p, (*a.gulp)[a.r:a.w])
	a.r += n
	a.releaseIfRead()
	return n
}

func (a *readAhead) releaseIfRead() {
	if a.r == a.w {
		gulpPool.Put(a.gulp)
		a.gulp = nil
		a.r, a.w = 0, 0
	}
}

// errWouldBlock is temporary, so TLS keeps a partly received record and
// does not fail the connection.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }
