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

// handle owns one local connection.
func (p *Proxy) handle(ctx context.Context, raw net.Conn) {
	raw.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	local, st, err := p.readStartup(raw)
	if err != nil {
		var pe *pgwire.Error
		if errors.As(err, &pe) { // a startup the server would refuse too: say why here
			pe.Send(local)
		}
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) { // a port probe, or a client that gave up
			level = slog.LevelDebug
		}
		p.log.Log(ctx, level, "local connection closed during startup", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	if st.Kind == pgwire.KindCancel {
		p.forwardCancel(ctx, st.Cancel)
		return
	}
	stream, err := p.open(ctx, local, st)
	if err != nil {
		var pe *pgwire.Error
		if errors.As(err, &pe) {
			pe.Send(local)
		}
		p.log.Warn("connection failed", "user", userOf(st), "err", err)
		return
	}
	local.SetDeadline(time.Time{})
	stream.SetDeadline(time.Time{})
	res := relay.Relay(local, stream, nil, nil)
	p.log.Debug("connection closed", "user", userOf(st), "bytes_sent", res.ToB, "bytes_received", res.ToA)
}

// readStartup answers encryption requests and returns the connection to
// use from then on (TLS after an accepted SSLRequest) with the
// StartupMessage or CancelRequest, or on error the connection to answer
// on. GSS encryption is declined; an SSLRequest is accepted with LocalTLS,
// else declined.
func (p *Proxy) readStartup(local net.Conn) (net.Conn, *pgwire.Startup, error) {
	for range 3 {
		st, err := pgwire.ReadStartup(local, p.cfg.MaxStartupSize)
		if err != nil {
			if errors.Is(err, pgwire.ErrDirectTLS) {
				return local, nil, fmt.Errorf("%w (the local listener accepts TLS only after an SSLRequest)", err)
			}
			return local, nil, err
		}
		_, isTLS := local.(*tls.Conn)
		switch {
		case st.Kind == pgwire.KindSSLRequest && p.cfg.LocalTLS != nil && !isTLS:
			if _, err := local.Write([]byte{'S'}); err != nil {
				return nil, nil, err
			}
			tc := tls.Server(local, p.cfg.LocalTLS)
			if err := tc.Handshake(); err != nil {
				return nil, nil, fmt.Errorf("local TLS handshake: %w", err)
			}
			local = tc
		case st.Kind == pgwire.KindSSLRequest || st.Kind == pgwire.KindGSSENCRequest:
			if _, err := local.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		default:
			return local, st, nil
		}
	}
	return nil, nil, errors.New("too many encryption requests")
}

// open dials the server, sends the startup (and the token, for IAM
// targets) in one write, and consumes the server's password request.
// Any other first reply is forwarded to the local client. When the server
// refuses the identity as signed for another server (the tunnel moved to
// another replica), open learns the server's id and tries once more.
func (p *Proxy) open(ctx context.Context, local net.Conn, st *pgwire.Startup) (net.Conn, error) {
	stream, err := p.openOnce(ctx, local, st)
	if errors.Is(err, errOtherServer) && p.relearnServer(ctx) {
		stream, err = p.openOnce(ctx, local, st)
	}
	if errors.Is(err, errOtherServer) {
		err = p.forwardRefusal(local, err)
	}
	return stream, err
}

func (p *Proxy) openOnce(ctx context.Context, local net.Conn, st *pgwire.Startup) (net.Conn, error) {
	t := p.cfg.Target
	user := userOf(st)
	params, _ := pgwire.StripReserved(st.Params)
	params = params.Set(pgwire.TargetParam, t.Name)
	var token string
	if t.Auth == contract.AuthIAM {
		var err error
		if token, err = p.cfg.Tokens.Get(ctx, t.Endpoint, t.Region, user); err != nil {
			return nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "token",
				"rdsproxy: cannot sign an IAM token for user %q: %v", user, err).
				WithHint("Check your AWS credentials (AWS_PROFILE, `aws sso login`).")
		}
	}
	params, err := p.addIdentity(ctx, params, token)
	if err != nil {
		return nil, err
	}
	msg := pgwire.AppendStartup(nil, st.Protocol, params)
	if token != "" {
		msg = pgwire.AppendPassword(msg, token)
	}
	stream, err := p.dialServer(ctx)
	if err != nil {
		return nil, pgwire.Errorf(pgwire.CodeCannotConnect, "tunnel",
			"rdsproxy: cannot reach the rdsproxy server: %v", err)
	}
	if err := p.exchange(local, stream, msg); err != nil {
		stream.Close()
		return nil, err
	}
	return stream, nil
}

// exchange writes the startup and reads the server's first reply.
func (p *Proxy) exchange(local, stream net.Conn, msg []byte) error {
	stream.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	if _, err := stream.Write(msg); err != nil {
		return pgwire.Errorf(pgwire.CodeConnectionFailure, "tunnel", "rdsproxy: send startup to the server: %v", err)
	}
	m, err := pgwire.ReadMessage(stream, nil, maxServerReply)
	if err != nil {
		return pgwire.Errorf(pgwire.CodeConnectionFailure, "tunnel", "rdsproxy: the server closed the connection during startup: %v", err)
	}
	if p.cfg.Target.Auth == contract.AuthIAM && m.AuthCode() == pgwire.AuthCleartextPassword {
		if p.server.Load() == nil {
			return nil // the token already follows the startup
		}
		// The server checks the identity once it has the token: its next
		// message says whether it took it, after the database's login.
		stream.SetDeadline(time.Now().Add(p.cfg.StartupTimeout + identityLoginWait))
		if m, err = pgwire.ReadMessage(stream, nil, maxServerReply); err != nil {
			return pgwire.Errorf(pgwire.CodeConnectionFailure, "tunnel", "rdsproxy: the server closed the connection during startup: %v", err)
		}
	}
	if signedForOtherServer(m) {
		return &otherServer{msg: m.Raw}
	}
	if _, err := local.Write(m.Raw); err != nil {
		return fmt.Errorf("forward server reply: %w", err)
	}
	return nil
}

// dialServer opens a stream to the server and, when configured, upgrades
// it to TLS the PostgreSQL way (SSLRequest, 'S', handshake).
func (p *Proxy) dialServer(ctx context.Context) (net.Conn, error) {
	return DialServer(ctx, p.cfg.Tunnel, p.cfg.ServerTLS)
}

// forwardCancel relays a local CancelRequest to the server on a new
// stream and waits until the server has handled it.
func (p *Proxy) forwardCancel(ctx context.Context, key pgwire.CancelKey) {
	stream, err := p.dialServer(ctx)
	if err != nil {
		p.log.Warn("cancel request not forwarded", "err", err)
		return
	}
	defer stream.Close()
	stream.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	if _, err := stream.Write(pgwire.AppendCancel(nil, key)); err != nil {
		p.log.Warn("cancel request not forwarded", "err", err)
		return
	}
	io.Copy(io.Discard, io.LimitReader(stream, 1<<10))
}

func userOf(st *pgwire.Startup) string {
	u, _ := st.Params.Get("user")
	return u
}

// DialServer opens a stream through tun and negotiates TLS when cfg is set.
func DialServer(ctx context.Context, tun tunnel.Tunnel, cfg *tls.Config) (net.Conn, error) {
	stream, err := tun.Dial(ctx)
	if err != nil || cfg == nil {
		return stream, err
	}
	if err := sslRequest(ctx, stream); err != nil {
		stream.Close()
		return nil, err
	}
	tc := tls.Client(stream, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		stream.Close()
		return nil, fmt.Errorf("TLS with the rdsproxy server: %w", err)
	}
	return tc, nil
}

func sslRequest(ctx context.Context, stream net.Conn) error {
	if d, ok := ctx.Deadline(); ok {
		stream.SetDeadline(d)
		defer stream.SetDeadline(time.Time{})
	}
	if _, err := stream.Write(pgwire.AppendSSLRequest(nil)); err != nil {
		return fmt.Errorf("send SSLRequest to the rdsproxy server: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(stream, b[:]); err != nil {
		return fmt.Errorf("read SSL answer from the rdsproxy server: %w", err)
	}
	if b[0] != 'S' {
		return errors.New("the rdsproxy server has no TLS certificate (--tls-cert); TLS to it was required")
	}
	return nil
}
