package pgwire

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/rdsproxy/rdsproxy/contract"
)

// Negotiation is the listening side of the startup phase, shared by the
// client's local listener and the server: it answers encryption requests
// the way PostgreSQL does until the client sends a StartupMessage or a
// CancelRequest. Each of SSLRequest and GSSENCRequest may come once (a
// GSSENCRequest never after TLS was set up); anything more is refused
// with 08P01. GSS encryption is always declined.
type Negotiation struct {
	// TLS accepts an SSLRequest with this server configuration; nil
	// declines it with 'N'.
	TLS *tls.Config
	// MaxStartupSize bounds each packet (default DefaultMaxStartupSize).
	MaxStartupSize int
	// Await, when set, runs every blocking read from the client: the first
	// bytes of a packet (first is true), the rest of it and a TLS
	// handshake. The server sets its deadlines and marks the connection
	// as waiting for its client there.
	Await func(c net.Conn, first bool, read func() error) error
}

// HTTPRequest is the error Negotiate returns when a packet begins with an
// HTTP method: Head holds its first four bytes, already read.
type HTTPRequest struct{ Head [4]byte }

func (*HTTPRequest) Error() string { return ErrHTTP.Error() }
func (*HTTPRequest) Unwrap() error { return ErrHTTP }

// Negotiate reads startup packets from c. It returns the connection to
// use from then on (TLS after an accepted SSLRequest) and the
// StartupMessage or CancelRequest. On error the connection returned is
// the one to answer on, nil when a TLS handshake failed half-way; a
// refusal is a *Error, an HTTP request a *HTTPRequest.
func (n *Negotiation) Negotiate(c net.Conn) (net.Conn, *Startup, error) {
	max := n.MaxStartupSize
	if max == 0 {
		max = DefaultMaxStartupSize
	}
	await := n.Await
	if await == nil {
		await = func(_ net.Conn, _ bool, read func() error) error { return read() }
	}
	sslDone, gssDone := false, false
	for {
		var hdr [4]byte
		err := await(c, true, func() (err error) { hdr, err = Peek(c); return err })
		if errors.Is(err, ErrHTTP) {
			return c, nil, &HTTPRequest{Head: hdr}
		}
		if err != nil {
			return c, nil, err
		}
		var st *Startup
		if err := await(c, false, func() (err error) { st, err = ReadStartupAfter(c, hdr, max); return err }); err != nil {
			return c, nil, err
		}
		switch {
		case st.Kind == KindSSLRequest && !sslDone:
			sslDone = true
			if n.TLS == nil {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return nil, nil, fmt.Errorf("answer SSLRequest: %w", err)
				}
				continue
			}
			if _, err := c.Write([]byte{'S'}); err != nil {
				return nil, nil, fmt.Errorf("answer SSLRequest: %w", err)
			}
			tc := tls.Server(c, n.TLS)
			if err := await(tc, false, tc.Handshake); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			c, gssDone = tc, true // no GSS encryption inside TLS
		case st.Kind == KindGSSENCRequest && !gssDone:
			gssDone = true
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, nil, fmt.Errorf("answer GSSENCRequest: %w", err)
			}
		case st.Kind == KindSSLRequest || st.Kind == KindGSSENCRequest:
			return c, nil, repeatedRequest(st.Kind)
		default:
			return c, st, nil
		}
	}
}

// repeatedRequest refuses an encryption request that came once too
// often, as PostgreSQL does (it answers FATAL too, not 'N').
func repeatedRequest(k Kind) *Error {
	what := "SSLRequest"
	if k == KindGSSENCRequest {
		what = "GSSENCRequest"
	}
	return Errorf(CodeProtocolViolation, contract.ReasonProtocol, "rdsproxy: %s after encryption was already negotiated", what).
		WithHint("Send the StartupMessage after the answer to the first SSLRequest or GSSENCRequest, as libpq does.")
}
