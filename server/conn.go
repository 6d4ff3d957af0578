package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// handle owns one client connection from accept to close: the startup
// packets (and TLS), then a cancel or a session.
func (s *Server) handle(ctx context.Context, raw net.Conn, pc *pendingConn) {
	setKeepAlive(raw, s.cfg.KeepAlive)
	limitUnsent(raw)
	ph := &phase{pc: pc, end: time.Now().Add(s.cfg.StartupTimeout)}
	conn, st, err := s.negotiate(ctx, raw, ph)
	if err != nil {
		s.startupFailed(raw, conn, ph, err)
		return
	}
	switch st.Kind {
	case pgwire.KindCancel:
		s.pending.remove(pc)
		s.forwardCancel(ctx, st.Cancel)
	case pgwire.KindStartup:
		if _, isTLS := conn.(*tls.Conn); s.cfg.RequireTLS && !isTLS { // a session or a stripe: refused with an audit line that says who
			s.refuse(conn, ph, s.newSessionInfo(conn, ph, st), tlsRequired())
			return
		}
		if id, ok := st.Params.Get(contract.JoinParam); ok {
			s.join(conn, ph, id)
			return
		}
		s.session(ctx, conn, ph, st)
	}
}

// phase is a connection's place in its startup: the deadline of the whole
// phase and its pending entry, which an eviction marks.
type phase struct {
	pc    *pendingConn
	end   time.Time
	spoke bool // the client sent at least one byte
}

// wait sets c's deadline for the next step: at most d from now, never
// past the end of the startup phase. Socket deadlines use the real clock,
// whatever Config.Now says.
func (p *phase) wait(c net.Conn, d time.Duration) {
	t := time.Now().Add(d)
	if t.After(p.end) {
		t = p.end
	}
	p.pc.setDeadline(c, t)
}

// negotiate runs the startup phase's encryption requests (see
// pgwire.Negotiation) with the phase's deadlines: FirstByteTimeout for
// each packet's first bytes, the end of the phase for the rest. An HTTP
// request is served here and reported as errHandled. The connection it
// returns is the one to answer on, also with an error (nil while TLS is
// half set up).
func (s *Server) negotiate(ctx context.Context, raw net.Conn, ph *phase) (net.Conn, *pgwire.Startup, error) {
	n := pgwire.Negotiation{TLS: s.cfg.ClientTLS, MaxStartupSize: s.cfg.MaxStartupSize,
		Await: func(c net.Conn, first bool, read func() error) error {
			if first {
				ph.wait(c, s.cfg.FirstByteTimeout)
			} else {
				ph.spoke = true
				ph.wait(c, s.cfg.StartupTimeout)
			}
			_, err := awaitClient(ph.pc, func() (struct{}, error) { return struct{}{}, read() })
			return err
		}}
	conn, st, err := n.Negotiate(raw)
	var hr *pgwire.HTTPRequest
	if errors.As(err, &hr) {
		return nil, nil, s.serveHTTP(ctx, conn, ph, hr.Head)
	}
	if err != nil {
		return conn, nil, err
	}
	return conn, st, nil
}

func tlsRequired() *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, contract.ReasonTLSRequired,
		"rdsproxy: this server accepts only TLS connections").
		WithHint("Connect with sslmode=require or verify-full (JDBC: ssl=true), or through `rdsproxy connect`.")
}

var errHandled = errors.New("handled")

// startupFailed ends a connection whose startup failed. conn is where a
// reply may go (nil mid-TLS-handshake). An evicted connection gets 53300,
// one that timed out after it began its startup 08006, a refusal its own
// ErrorResponse.
func (s *Server) startupFailed(raw, conn net.Conn, ph *phase, err error) {
	if errors.Is(err, errHandled) {
		return
	}
	var reply *pgwire.Error
	reason := "client-io"
	switch {
	case ph.pc.evicted.Load():
		reply, reason = evictedError(), contract.ReasonEvicted
	case errors.As(err, &reply):
		reason = reply.Reason
	case isTimeout(err) && !ph.spoke: // a silent socket: nothing to answer
		reason = contract.ReasonStartupTimeout
	case isTimeout(err):
		reply = startupTimeout("finish its startup", "Send the startup and the password promptly; a silent connection is closed after a few seconds.")
		reason = reply.Reason
	}
	s.cfg.Metrics.startupFailed(reason) // before the client hears it, as in refuse
	if reply != nil && conn != nil {
		reply.Send(conn)
	}
	s.log.Debug("connection closed during startup", "remote", raw.RemoteAddr().String(), "reason", reason, "err", err)
}

// startupTimeout is the 08006 a client gets when it did not do what in time.
func startupTimeout(what, hint string) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeConnectionFailure, contract.ReasonStartupTimeout, "rdsproxy: the client did not %s in time", what).
		WithHint(hint)
}

// isTimeout reports a deadline that passed (a net.Error that timed out).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// evictedMessage tells an evicted connection why it is closed.
const evictedMessage = "rdsproxy: too many connections are in their startup phase; this one was closed to make room"

func evictedError() *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeTooManyConnections, contract.ReasonEvicted, evictedMessage).
		WithHint("Reconnect and send the startup and password promptly; a client flooding the server may be the cause.")
}

func setKeepAlive(c net.Conn, period time.Duration) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: period, Interval: period, Count: 3})
	}
}
