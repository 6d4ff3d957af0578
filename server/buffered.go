package server

import (
	"crypto/tls"
	"net"
	"sync/atomic"

	"github.com/rdsproxy/rdsproxy/internal/relay"
)

// bufferedTLS is an upstream TLS connection that can hand the relay, without
// blocking, the records it has already received: TLS reads the socket in
// large gulps, and PostgreSQL sends records of at most 8 KiB, so during a
// COPY out several are usually waiting. See relay.BufferedReader.
type bufferedTLS struct {
	*tls.Conn
	raw *holdableConn
}

var _ relay.BufferedReader = (*bufferedTLS)(nil)

func newBufferedTLS(raw net.Conn, cfg *tls.Config) *bufferedTLS {
	h := &holdableConn{Conn: raw}
	return &bufferedTLS{Conn: tls.Client(h, cfg), raw: h}
}

// ReadBuffered returns what TLS can decrypt from bytes it already holds,
// and 0 when it would have to read the socket.
func (c *bufferedTLS) ReadBuffered(p []byte) (int, error) {
	c.raw.held.Store(true)
	defer c.raw.held.Store(false)
	n, err := c.Conn.Read(p)
	if err == errWouldBlock {
		err = nil
	}
	return n, err
}

// holdableConn is a connection whose reads can be held: a held Read
// returns errWouldBlock at once instead of reading the socket.
type holdableConn struct {
	net.Conn
	held atomic.Bool
}

func (c *holdableConn) Read(p []byte) (int, error) {
	if c.held.Load() {
		return 0, errWouldBlock
	}
	return c.Conn.Read(p)
}

// errWouldBlock is temporary, so TLS keeps a partly received record and
// does not fail the connection.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }
