package pgwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ErrTLSRefused: the server answered an SSLRequest with 'N'.
var ErrTLSRefused = errors.New("the server does not accept TLS (it answered the SSLRequest with 'N')")

// TLS steps a StepError names.
const (
	StepSendSSLRequest = "send SSLRequest"
	StepReadSSLAnswer  = "read SSL answer"
	StepTLSHandshake   = "TLS handshake"
)

// StepError is a failure of one step of RequestTLS.
type StepError struct {
	Step string // one of the Step constants
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// TLSConn is a TLS client connection: *tls.Conn, or a type that wraps one.
type TLSConn interface {
	net.Conn
	HandshakeContext(ctx context.Context) error
}

// ErrNotPostgreSQL: the far end answered an SSLRequest with neither 'S'
// nor 'N'.
var ErrNotPostgreSQL = errors.New("not a PostgreSQL server")

// AskTLS sends an SSLRequest on c and reads the one-byte answer: true
// for 'S', false for 'N'. I/O failures are *StepErrors; any other answer
// wraps ErrNotPostgreSQL.
func AskTLS(c net.Conn) (bool, error) {
	if _, err := c.Write(AppendSSLRequest(nil)); err != nil {
		return false, &StepError{StepSendSSLRequest, err}
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		return false, &StepError{StepReadSSLAnswer, err}
	}
	switch answer[0] {
	case 'S':
		return true, nil
	case 'N':
		return false, nil
	}
	return false, fmt.Errorf("%w: it answered %q to an SSLRequest", ErrNotPostgreSQL, answer[0])
}

// RequestTLS upgrades c the PostgreSQL way, as the client side of the
// startup phase: SSLRequest, the server's 'S', then a TLS handshake on
// the connection newTLS builds over c, all within ctx's deadline. A
// server that answers 'N' is ErrTLSRefused; other failures are
// *StepErrors or wrap ErrNotPostgreSQL. c's deadline is cleared on success.
func RequestTLS[C TLSConn](ctx context.Context, c net.Conn, newTLS func(net.Conn) C) (C, error) {
	var none C
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	ok, err := AskTLS(c)
	if err != nil {
		return none, err
	}
	if !ok {
		return none, ErrTLSRefused
	}
	tc := newTLS(c)
	if err := tc.HandshakeContext(ctx); err != nil {
		return none, &StepError{StepTLSHandshake, err}
	}
	c.SetDeadline(time.Time{})
	return tc, nil
}
