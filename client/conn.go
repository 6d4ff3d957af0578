package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/relay"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// maxServerReply bounds the first message the server sends back (an
// authentication request or an ErrorResponse).
const maxServerReply = 64 << 10

// handle owns one local connection until it ends, and reports whether
// the end of ctx (the stop) ended it: a connection still starting is
// closed, a relayed one hears why first (stopMessage).
func (p *Proxy) handle(ctx context.Context, raw net.Conn) (stopped bool) {
	unwatch := context.AfterFunc(ctx, func() { raw.Close() })
	local, stream, joins, user := p.startupApart(ctx, raw)
	defer joins.stop()
	if !unwatch() { // the stop closed raw during the startup
		if stream != nil {
			stream.Close()
		}
		return true
	}
	if stream == nil {
		return false
	}
	local.SetDeadline(time.Time{})
	stream.SetDeadline(time.Time{})
	r := relay.New(local, stream, relay.Options{FrameToA: true, Lost: lostMessage})
	unstop := context.AfterFunc(ctx, func() { r.Stop(stopMessage()) })
	defer unstop()
	res := r.Run(nil, nil)
	p.log.Debug("connection closed", "user", user, "bytes_sent", res.ToB, "bytes_received", res.ToA)
	return res.Stopped
}

// stopMessage ends the relayed connections of a connect that stops, so
// that psql and drivers say why instead of "server closed the connection
// unexpectedly". 57P01 is what PostgreSQL sends when an administrator
// ends a session; pools reconnect on it.
func stopMessage() []byte {
	return pgwire.Errorf(pgwire.CodeAdminShutdown, contract.ReasonShutdown,
		"rdsproxy: terminating connection because rdsproxy connect is stopping").
		WithHint("Start rdsproxy connect again, then reconnect.").AppendTo(nil)
}

// lostMessage tells a relayed connection why it ends when the stream to
// the server fails (the tunnel dropped, the server's host went away):
// psql says so instead of "server closed the connection unexpectedly".
// 08006 is connection_failure; pools reconnect on it.
func lostMessage(err error) []byte {
	return pgwire.Errorf(pgwire.CodeConnectionFailure, contract.ReasonServerLost,
		"rdsproxy: lost the connection to the rdsproxy server (%v)", err).
		WithHint("Reconnect: rdsproxy connect opens the tunnel again by itself. If this repeats, check the network and the server.").AppendTo(nil)
}

// startupApart runs startup on a goroutine that ends with it, so that the
// stack the login grows (the startup exchange, signing the token, TLS to
// the server) goes back to the runtime instead of staying, for the life of
// the connection, with the goroutine that then relays it: make bench
// measured a median 11.8 KiB of RSS per idle connection in a fresh
// process, where it was 14.7.
func (p *Proxy) startupApart(ctx context.Context, raw net.Conn) (local, stream net.Conn, joins *joining, user string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		local, stream, joins, user = p.startup(ctx, raw)
	}()
	<-done
	return local, stream, joins, user
}

// startup negotiates the local connection and opens its stream to the
// server, answering the client itself when that fails. A nil stream means
// the connection has ended (a refusal, or a cancel request forwarded).
func (p *Proxy) startup(ctx context.Context, raw net.Conn) (local, stream net.Conn, joins *joining, user string) {
	raw.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	n := pgwire.Negotiation{TLS: p.cfg.LocalTLS, MaxStartupSize: p.cfg.MaxStartupSize}
	local, st, err := n.Negotiate(raw)
	if err != nil {
		var pe *pgwire.Error
		if errors.As(err, &pe) && local != nil { // a startup the server would refuse too: say why here
			pe.Send(local)
		}
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) { // a port probe, or a client that gave up
			level = slog.LevelDebug
		}
		if errors.Is(err, pgwire.ErrDirectTLS) {
			err = fmt.Errorf("%w (the local listener accepts TLS only after an SSLRequest)", err)
		}
		p.log.Log(ctx, level, "local connection closed during startup", "remote", raw.RemoteAddr().String(), "err", err)
		return nil, nil, nil, ""
	}
	if st.Kind == pgwire.KindCancel {
		p.forwardCancel(ctx, st.Cancel)
		return nil, nil, nil, ""
	}
	user = userOf(st)
	stream, joins, err = p.open(ctx, local, st)
	if err != nil {
		var pe *pgwire.Error
		if errors.As(err, &pe) {
			pe.Send(local)
		}
		p.log.Warn("connection failed", "user", user, "err", err)
		return nil, nil, joins, user
	}
	return local, stream, joins, user
}

// open dials the server, sends the startup (and the token, for IAM
// targets) in one write, and consumes the server's password request.
// Any other first reply is forwarded to the local client. When the server
// refuses the identity as signed for another server (the tunnel moved to
// another replica), open learns the server's id and tries once more; so
// it does when the stream ended before the server sent a byte.
//
// When the server takes the striped transport, the stream returned is the
// striped connection, and joins is adding its further stripes; the caller
// stops it when the connection ends.
func (p *Proxy) open(ctx context.Context, local net.Conn, st *pgwire.Startup) (stream net.Conn, joins *joining, err error) {
	stream, joins, err = p.openOnce(ctx, local, st)
	if errors.Is(err, errNoAnswer) {
		p.log.Info("the server closed a new connection before answering (a replica draining or gone); trying once more")
		stream, joins, err = p.openOnce(ctx, local, st)
	}
	if errors.Is(err, errNoAnswer) {
		err = pgwire.Errorf(pgwire.CodeConnectionFailure, "tunnel", "rdsproxy: %v, twice", err).
			WithHint("The rdsproxy server may be restarting; try again in a few seconds.")
	}
	if errors.Is(err, errOtherServer) && p.relearnServer(ctx) {
		stream, joins, err = p.openOnce(ctx, local, st)
	}
	if errors.Is(err, errOtherServer) {
		err = p.forwardRefusal(local, err)
	}
	return stream, joins, err
}

func (p *Proxy) openOnce(ctx context.Context, local net.Conn, st *pgwire.Startup) (net.Conn, *joining, error) {
	t := p.cfg.Target
	user := userOf(st)
	if user == "" { // refused here, before a token is signed for no one
		return nil, nil, pgwire.NoUser()
	}
	params, _ := pgwire.StripReserved(st.Params)
	params = params.Set(pgwire.TargetParam, t.Name)
	var token string
	if t.Auth == contract.AuthIAM {
		var err error
		if token, err = p.cfg.Tokens.Get(ctx, t.Endpoint, t.Region, user); err != nil {
			return nil, nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "token",
				"rdsproxy: cannot sign an IAM token for user %q: %v", user, err).
				WithHint("Check your AWS credentials (AWS_PROFILE, `aws sso login`).")
		}
	}
	params, err := p.addIdentity(ctx, params, token)
	if err != nil {
		return nil, nil, err
	}
	stream, err := p.dialServer(ctx)
	if err != nil {
		return nil, nil, pgwire.Errorf(pgwire.CodeCannotConnect, "tunnel",
			"rdsproxy: cannot reach the rdsproxy server: %v", err).WithHint(p.doctorHint("Check that the server runs and that this tunnel reaches it"))
	}
	offer := p.offer(stream)
	if offer != nil {
		params = params.Set(contract.TransportParam, offer.String())
	}
	msg := pgwire.AppendStartup(nil, st.Protocol, params)
	if token != "" {
		msg = pgwire.AppendPassword(msg, token)
	}
	taken, refused, err := p.exchange(local, stream, msg, offer != nil)
	if err != nil {
		stream.Close()
		return nil, nil, err
	}
	if taken == nil {
		if offer != nil && offer.Lane && !refused {
			p.laneOff("the server keeps connections one raw stream (it is older than striping, or runs with --no-striping)")
		}
		return stream, nil, nil
	}
	sc, joins := p.stripe(ctx, stream, *taken, *offer)
	return sc, joins, nil
}

// exchange writes the startup and reads the server's first reply. When
// the server takes the striped transport offered, it returns the mode
// taken and forwards nothing: the rest comes through the stripes.
// Otherwise it forwards the reply; refused says it was an ErrorResponse
// (which says nothing about the transport: the server refuses before it
// answers an offer).
func (p *Proxy) exchange(local, stream net.Conn, msg []byte, offered bool) (taken *contract.Transport, refused bool, err error) {
	stream.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	if _, err := stream.Write(msg); err != nil {
		return nil, false, pgwire.Errorf(pgwire.CodeConnectionFailure, "tunnel", "rdsproxy: send startup to the server: %v", err)
	}
	m, err := pgwire.ReadMessage(stream, nil, maxServerReply)
	if errors.Is(err, io.EOF) { // not a byte: nothing reached the database
		return nil, false, errNoAnswer
	}
	if err == nil && m.Type == pgwire.MsgNegotiateProtocol {
		// A protocol newer than the server's: the client hears it, and
		// the password request follows.
		if _, err := local.Write(m.Raw); err != nil {
			return nil, false, fmt.Errorf("forward server reply: %w", err)
		}
		m, err = pgwire.ReadMessage(stream, nil, maxServerReply)
	}
	if err != nil {
		return nil, false, p.closedDuringStartup(err)
	}
	if p.cfg.Target.Auth == contract.AuthIAM && m.AuthCode() == pgwire.AuthCleartextPassword {
		if p.server.Load() == nil && !offered {
			return nil, false, nil // the token already follows the startup
		}
		// The server checks the identity once it has the token, and takes
		// a transport offer after that: its next message says whether it
		// took them (at the latest after the database's login).
		stream.SetDeadline(time.Now().Add(p.cfg.StartupTimeout + identityLoginWait))
		if m, err = pgwire.ReadMessage(stream, nil, maxServerReply); err != nil {
			return nil, false, p.closedDuringStartup(err)
		}
		if taken, ok, err := transportTaken(m); ok || err != nil {
			return taken, false, err
		}
	}
	if signedForOtherServer(m) {
		return nil, false, &otherServer{msg: m.Raw}
	}
	if _, err := local.Write(m.Raw); err != nil {
		return nil, false, fmt.Errorf("forward server reply: %w", err)
	}
	return nil, m.Type == pgwire.MsgErrorResponse, nil
}

// errNoAnswer: the stream ended before the server sent a byte, as it does
// on a replica that is draining or gone. Nothing reached the database, so
// open tries once more on a new stream, which a tunnel spread over
// replicas places on another one.
var errNoAnswer = errors.New("the rdsproxy server closed the connection before answering")

// dialServer opens a stream to the server and, when configured, upgrades
// it to TLS the PostgreSQL way (SSLRequest, 'S', handshake). A connection
// that will offer striping opens its first stream over the tunnel's lane,
// if it has one (tunnel.LaneDialer).
func (p *Proxy) dialServer(ctx context.Context) (net.Conn, error) {
	tun := p.cfg.Tunnel
	if ld, ok := tun.(tunnel.LaneDialer); ok && p.cfg.Striping && p.cfg.Target.Auth == contract.AuthIAM && !p.laneIsOff() {
		tun = laneTunnel{tun, ld}
	}
	return DialServer(ctx, tun, p.cfg.ServerTLS)
}

// laneOff keeps new connections off the tunnel's lane for laneRetry: the
// server took a connection that crossed the lane without using it as one,
// and others would all crowd that one session.
func (p *Proxy) laneOff(why string) {
	now := time.Now()
	until := now.Add(laneRetry)
	switch was := p.laneOffUntil.Swap(&until); {
	case was == nil:
		p.log.Info(why+": connections spread over the tunnel's sessions without an interactive lane", "retry_after", laneRetry.String())
	case now.After(*was):
		p.log.Debug(why+": the lane stays off", "retry_after", laneRetry.String())
	}
}

// laneIsOff reports whether new connections keep off the lane (laneOff).
func (p *Proxy) laneIsOff() bool {
	until := p.laneOffUntil.Load()
	return until != nil && time.Now().Before(*until)
}

// laneTunnel dials over its tunnel's lane.
type laneTunnel struct {
	tunnel.Tunnel
	lane tunnel.LaneDialer
}

func (t laneTunnel) Dial(ctx context.Context) (net.Conn, error) { return t.lane.DialLane(ctx) }

func userOf(st *pgwire.Startup) string {
	u, _ := st.Params.Get("user")
	return u
}

// ErrServerWithoutTLS: TLS to the rdsproxy server was required, and the
// server answered that it has no certificate.
var ErrServerWithoutTLS = errors.New("the rdsproxy server has no TLS certificate; TLS to it was required")

// DialServer opens a stream through tun and, when cfg is set, upgrades it
// to TLS the PostgreSQL way (pgwire.RequestTLS).
func DialServer(ctx context.Context, tun tunnel.Tunnel, cfg *tls.Config) (net.Conn, error) {
	stream, err := tun.Dial(ctx)
	if err != nil || cfg == nil {
		return stream, err
	}
	return upgradeServer(ctx, stream, cfg)
}

// upgradeServer upgrades a stream to the server to TLS, or closes it.
func upgradeServer(ctx context.Context, stream net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc, err := pgwire.RequestTLS(ctx, stream, func(c net.Conn) *tls.Conn { return tls.Client(c, cfg) })
	if err != nil {
		stream.Close()
		if errors.Is(err, pgwire.ErrTLSRefused) {
			return nil, ErrServerWithoutTLS
		}
		return nil, fmt.Errorf("TLS with the rdsproxy server: %w", err)
	}
	return tc, nil
}

// closedDuringStartup is the error of a stream the server (or the tunnel
// to it) closed before it answered the startup.
func (p *Proxy) closedDuringStartup(err error) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeConnectionFailure, contract.ReasonTunnel, "rdsproxy: the server closed the connection during startup: %v", err).
		WithHint(p.doctorHint("Reconnect: the server may have been restarting"))
}

// doctorHint is first, then how to find out more: `rdsproxy doctor`
// checks each step from the tunnel to the database.
func (p *Proxy) doctorHint(first string) string {
	return fmt.Sprintf("%s. If it lasts, `rdsproxy doctor %s` (with the options of this connect) checks each step and says which one fails.", first, p.cfg.Target.Name)
}
