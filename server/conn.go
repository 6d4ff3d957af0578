package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// handle owns one client connection from accept to close.
func (s *Server) handle(ctx context.Context, raw net.Conn) {
	pendingHeld := true
	defer func() {
		if pendingHeld {
			s.releasePending(raw)
		}
	}()
	setKeepAlive(raw, s.cfg.KeepAlive)
	raw.SetDeadline(s.cfg.Now().Add(s.cfg.StartupTimeout))
	conn, st, err := s.negotiate(raw)
	if err != nil {
		s.logStartupError(raw, err)
		return
	}
	switch st.Kind {
	case pgwire.KindCancel:
		s.forwardCancel(ctx, st.Cancel)
		return
	case pgwire.KindStartup:
		select {
		case s.sessions <- struct{}{}:
		default:
			pgwire.Errorf(pgwire.CodeTooManyConnections, "too-many-sessions",
				"rdsproxy: the server already relays its maximum of %d sessions", s.cfg.MaxSessions).
				WithHint("Try again when a session ends, or ask the operator to raise --max-sessions.").Send(conn)
			s.log.Warn("session refused: at max-sessions", "remote", raw.RemoteAddr().String())
			return
		}
		defer func() { <-s.sessions }()
		pendingHeld = false
		s.releasePending(raw)
		s.session(ctx, conn, raw.RemoteAddr().String(), st)
	}
}

// negotiate reads startup packets until the client sends a StartupMessage
// or a CancelRequest, answering SSLRequest (upgrading to TLS when the
// server has a certificate) and GSSENCRequest on the way. HTTP requests
// are served here and reported as errHandled.
func (s *Server) negotiate(raw net.Conn) (net.Conn, *pgwire.Startup, error) {
	conn := raw
	for range 3 { // at most GSSENC, SSL, then the real packet
		hdr, err := pgwire.Peek(conn)
		if errors.Is(err, pgwire.ErrHTTP) {
			s.serveHTTP(conn, hdr)
			return nil, nil, errHandled
		}
		if err != nil {
			return nil, nil, err
		}
		st, err := pgwire.ReadStartupAfter(conn, hdr, s.cfg.MaxStartupSize)
		if err != nil {
			return nil, nil, err
		}
		switch st.Kind {
		case pgwire.KindGSSENCRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		case pgwire.KindSSLRequest:
			if conn, err = s.upgradeClient(conn); err != nil {
				return nil, nil, err
			}
		default:
			return conn, st, nil
		}
	}
	return nil, nil, errors.New("too many negotiation requests")
}

// upgradeClient answers an SSLRequest: 'S' and a TLS handshake when the
// server has a certificate, else 'N'.
func (s *Server) upgradeClient(conn net.Conn) (net.Conn, error) {
	if _, ok := conn.(*tls.Conn); ok {
		return nil, errors.New("SSLRequest inside TLS")
	}
	if s.cfg.ClientTLS == nil {
		_, err := conn.Write([]byte{'N'})
		return conn, err
	}
	if _, err := conn.Write([]byte{'S'}); err != nil {
		return nil, err
	}
	tc := tls.Server(conn, s.cfg.ClientTLS)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

var errHandled = errors.New("handled")

func (s *Server) logStartupError(c net.Conn, err error) {
	if errors.Is(err, errHandled) {
		return
	}
	s.log.Debug("connection closed during startup", "remote", c.RemoteAddr().String(), "err", err)
}

func setKeepAlive(c net.Conn, period time.Duration) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: 3})
	}
}
