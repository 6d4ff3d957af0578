package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/relay"
	"github.com/rdsproxy/rdsproxy/internal/stripe"
)

const (
	maxPasswordSize = 8 << 10 // an IAM token is about 1.5 KiB, with a session token about 3 KiB
	maxAuthMsgSize  = 64 << 10
	maxUpstreamMsg  = 1 << 20
)

// outcome is how a session ended, in its audit line and its metrics.
type outcome string

const (
	outcomeOK              outcome = "ok"               // relayed until either side ended it
	outcomeAborted         outcome = "aborted"          // relayed until an I/O error ended it (a peer vanished mid-stream)
	outcomeShutdown        outcome = "shutdown"         // relayed until the drain ended it
	outcomeRevoked         outcome = "revoked"          // relayed until its target no longer admitted it (revoke)
	outcomeRefused         outcome = "refused"          // rdsproxy refused it (an ErrorResponse of its own)
	outcomeRefusedUpstream outcome = "refused-upstream" // the database refused the login
	outcomeFailed          outcome = "failed"           // an I/O error before it was relayed
)

// relayed reports whether the session got as far as the relay.
func (o outcome) relayed() bool {
	return o == outcomeOK || o == outcomeAborted || o == outcomeShutdown || o == outcomeRevoked
}

// sessionInfo is what the audit line reports about one session.
type sessionInfo struct {
	remote, src, target, user, database, app, keyID string
	asked                                           string // the target name the client gave, when the server serves none of that name
	start                                           time.Time
	principal                                       *discovery.Principal // the verified caller, if any
	transport                                       string               // "raw", or the striped mode taken
	stripes                                         *stripe.Conn         // the striped connection, if any
	orphanCancelled                                 bool                 // a cancel went upstream when the client left (cancelOrphaned)
	refusal                                         string               // the message a refused client got (rdsproxy's, or the database's)
}

// newSessionInfo starts the audit of a session from its StartupMessage.
func (s *Server) newSessionInfo(client net.Conn, ph *phase, st *pgwire.Startup) sessionInfo {
	info := sessionInfo{remote: client.RemoteAddr().String(), src: ph.pc.src, start: s.cfg.Now()}
	info.user, _ = st.Params.Get("user")
	info.database, _ = st.Params.Get("database")
	info.app, _ = st.Params.Get("application_name")
	return info
}

// session runs one PostgreSQL session from its StartupMessage to its end:
// the client proves itself, takes a session slot, the server logs in to
// the target on its behalf, and the bytes are relayed.
func (s *Server) session(ctx context.Context, client net.Conn, ph *phase, st *pgwire.Startup) {
	info := s.newSessionInfo(client, ph, st)
	protocol, err := s.negotiateProtocol(client, st)
	if err != nil {
		s.refuse(client, ph, info, err)
		return
	}
	t, params, token, err := s.authenticate(ctx, client, ph, st, &info)
	if err != nil {
		s.refuse(client, ph, info, err)
		return
	}
	if !s.admit(ph.pc) {
		s.refuse(client, ph, info, pgwire.Errorf(pgwire.CodeTooManyConnections, contract.ReasonTooManySessions,
			"rdsproxy: the server already relays its maximum of %d sessions", s.cfg.MaxSessions).
			WithHint("Try again when a session ends, or ask the operator to raise --max-sessions."))
		return
	}
	defer func() { <-s.sessions }()
	client, endTransport, err := s.takeTransport(client, st.Params, t, &info)
	if err != nil {
		s.refuse(client, nil, info, err)
		return
	}
	defer endTransport()
	login := time.Now().Add(s.cfg.LoginTimeout)
	client.SetDeadline(login.Add(time.Second)) // outlives the upstream's, so its error still reaches the client
	up, pending, err := s.login(ctx, client, t, protocol, params, token, login)
	if err != nil {
		s.refuse(client, nil, info, err) // a session now: an eviction that raced admit no longer applies
		return
	}
	s.relay(client, ph.pc.conn, up, pending, info)
}

// relay runs an authenticated session until either side ends it. raw is
// the accepted connection under client (TLS, stripes), the one the server
// tracks.
func (s *Server) relay(client, raw net.Conn, up *upstream, pending []byte, info sessionInfo) {
	client.SetDeadline(time.Time{})
	up.conn.SetDeadline(time.Time{})
	opts := relay.Options{FrameToA: true, CancelAnswer: pgwire.AnswersCancel, Aside: s.aside}
	if up.hasKey {
		opts.EndedToB = func(tail []byte, idle bool) { info.orphanCancelled = s.cancelOrphaned(up, tail, idle) } // before Run returns
	}
	r := relay.New(client, up.conn, opts)
	adm := &admission{remote: info.remote, target: up.target, user: info.user, principal: info.principal}
	if !s.promote(raw, r, adm) { // the drain began while this session started
		up.conn.Close()
		s.refuse(client, nil, info, shutdownError())
		return
	}
	defer s.retire(r)
	s.cfg.Metrics.sessionStarted()
	if up.hasKey {
		s.cancels.add(up.key, cancelRoute{target: up.target, addr: up.addr, relay: r})
		defer s.cancels.remove(up.key)
	}
	res := r.Run(nil, pending)
	o, reason := outcomeOK, ""
	switch why := s.revokedWhy(r); {
	case res.Stopped && why != "":
		o, reason = outcomeRevoked, why
	case res.Stopped:
		o = outcomeShutdown
	case res.Err != nil:
		o = outcomeAborted
	}
	s.cfg.Metrics.sessionEnded(info.target, o, "", res.ToA, res.ToB, false)
	s.cfg.Metrics.droppedAfterCancel(res.DroppedToA)
	s.audit(info, o, reason, res, 0)
}

// negotiateProtocol picks the protocol version to ask the upstream for.
// Up to the newest version rdsproxy knows, the client's own, for the
// upstream to negotiate. Past it, rdsproxy answers for itself with
// NegotiateProtocolVersion 3.0 (every PostgreSQL speaks it, so the
// upstream never sends a second one) and drops the protocol options it
// lists as unrecognised.
func (s *Server) negotiateProtocol(client net.Conn, st *pgwire.Startup) (uint32, error) {
	if st.Protocol <= pgwire.ProtocolLatest {
		return st.Protocol, nil
	}
	var options []string
	for _, kv := range st.Params {
		if pgwire.IsProtocolOption(kv.Key) {
			options = append(options, kv.Key)
		}
	}
	st.Params = st.Params.Without(pgwire.IsProtocolOption)
	if _, err := client.Write(pgwire.AppendNegotiateProtocolVersion(nil, pgwire.Protocol30, options)); err != nil {
		return 0, fmt.Errorf("negotiate protocol version: %w", err)
	}
	return pgwire.Protocol30, nil
}

// admit moves a connection that has proved itself from the pending set
// to a session slot; false when every slot is taken.
func (s *Server) admit(pc *pendingConn) bool {
	select {
	case s.sessions <- struct{}{}:
		s.pending.remove(pc)
		return true
	default:
		return false
	}
}

// upstream is an authenticated connection to a target, ready to relay.
type upstream struct {
	conn   net.Conn
	target *discovery.Target
	addr   string // the address dialed: where this session's cancels go
	key    pgwire.CancelKey
	hasKey bool
	until  time.Time // the end of the login (the deadline of both sockets meanwhile)
}

// route is where this session's cancels go.
func (up *upstream) route() cancelRoute { return cancelRoute{target: up.target, addr: up.addr} }

// authenticate does the client's half of the startup: it resolves the
// target, and for IAM targets reads and pre-validates the token. It
// dials nothing, and refuses a caller whose failed logins used up its
// budget, and one whose identity or principal does not pass.
func (s *Server) authenticate(ctx context.Context, client net.Conn, ph *phase, st *pgwire.Startup, info *sessionInfo) (*discovery.Target, pgwire.Params, string, error) {
	t, params, err := s.route(st.Params, info)
	if err != nil {
		return nil, nil, "", err
	}
	var token string
	if t.Auth == discovery.AuthIAM {
		ph.wait(client, s.cfg.PasswordTimeout)
		if token, err = s.readToken(client, ph.pc, t, info); err != nil {
			return nil, nil, "", err
		}
	}
	if budget, wait := s.failures.check(info.keyID, info.src, time.Now()); budget != "" {
		return nil, nil, "", pgwire.Errorf(pgwire.CodeInvalidPassword, contract.ReasonAuthThrottled,
			"rdsproxy: too many failed logins from this %s; try again in %s", budget, wait.Round(time.Second)+time.Second).
			WithHint("The database refused this caller's recent logins; check the IAM policy (rds-db:connect) and the token's credentials.")
	}
	if err := s.checkIdentity(ctx, st.Params, t, info); err != nil {
		return nil, nil, "", err
	}
	return t, params, token, nil
}

// login does the upstream's half: dial, TLS, startup, authentication, up
// to ReadyForQuery, all before deadline. It returns the upstream and any
// bytes read past ReadyForQuery, or an error for the client.
func (s *Server) login(ctx context.Context, client net.Conn, t *discovery.Target, protocol uint32, params pgwire.Params, token string, deadline time.Time) (*upstream, []byte, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := s.dialTarget(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(deadline)
	up := &upstream{conn: conn, target: t, addr: conn.RemoteAddr().String(), until: deadline}
	pending, err := s.startup(client, up, protocol, params, token)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return up, pending, nil
}

// route finds the target a StartupMessage names and checks that the
// target serves this user. It never dials.
func (s *Server) route(params pgwire.Params, info *sessionInfo) (*discovery.Target, pgwire.Params, error) {
	name, rest, err := pgwire.TakeTarget(params)
	if err != nil {
		return nil, nil, err
	}
	if name == "" {
		return nil, nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, contract.ReasonNoTarget,
			"rdsproxy: the connection does not name a target").
			WithHint("Connect through `rdsproxy connect`, or add the startup parameter rdsproxy.target=NAME (options=-c rdsproxy.target=NAME).")
	}
	snap := s.cfg.Targets.Current()
	if snap == nil {
		return nil, nil, pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonNotReady,
			"rdsproxy: the server has not loaded its target list yet").WithHint("Try again in a few seconds.")
	}
	t, found := snap.Lookup(name)
	if !found {
		info.asked = name
		return nil, nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, contract.ReasonUnknownTarget,
			"rdsproxy: target %q is not served by this proxy", name).
			WithHint("Run `rdsproxy list` to see the targets this server serves.")
	}
	info.target = t.Name
	user, _ := rest.Get("user")
	if user == "" {
		return nil, nil, pgwire.NoUser()
	}
	if !t.AllowsUser(user) {
		return nil, nil, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, contract.ReasonUserNotAllowed,
			"rdsproxy: target %q does not allow database user %q; allowed users: %s", t.Name, user, strings.Join(t.Users, ", ")).
			WithHint("The target's rdsproxy:users tag lists the users it serves.")
	}
	if t.ReadOnly {
		rest = rest.Without(func(k string) bool { return k == "default_transaction_read_only" }).
			Set("default_transaction_read_only", "on")
	}
	return t, rest, nil
}

// readToken asks the client for its password, which must be an RDS IAM
// token for this target and user, and pre-validates it without AWS calls.
func (s *Server) readToken(client net.Conn, pc *pendingConn, t *discovery.Target, info *sessionInfo) (string, error) {
	if _, err := client.Write(pgwire.AppendAuthCleartext(nil)); err != nil {
		return "", fmt.Errorf("ask client for its token: %w", err)
	}
	m, err := awaitClient(pc, func() (pgwire.Message, error) { return pgwire.ReadMessage(client, nil, maxPasswordSize) })
	if isTimeout(err) {
		return "", startupTimeout("send its password (the IAM token)", "Send the token as the password right after the startup; `rdsproxy connect` does.")
	}
	if err != nil {
		return "", fmt.Errorf("read client token: %w", err)
	}
	token, err := pgwire.PasswordText(m)
	if err != nil {
		return "", pgwire.Errorf(pgwire.CodeProtocolViolation, contract.ReasonProtocol, "rdsproxy: %v", err)
	}
	tok, err := iamtoken.Parse(token)
	if err != nil {
		return "", badToken("malformed", err.Error())
	}
	info.keyID = tok.AccessKeyID
	err = tok.Check(iamtoken.Expect{Endpoint: t.Endpoint, User: info.user, Region: t.Region, Now: s.cfg.Now(), Skew: s.cfg.TokenSkew})
	var te *iamtoken.Error
	if errors.As(err, &te) {
		return "", badToken(te.Reason, te.Msg)
	}
	if err != nil {
		return "", badToken("invalid", err.Error())
	}
	return token, nil
}

func badToken(reason, msg string) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeInvalidPassword, contract.ReasonTokenPrefix+reason, "rdsproxy: IAM token rejected: %s", msg).
		WithHint("The password must be a fresh RDS IAM token for this target's endpoint and user; `rdsproxy connect` and `rdsproxy token` make one.")
}

// startup sends the StartupMessage upstream, answers a cleartext password
// request with the token (IAM) or relays the authentication exchange
// (passthrough), and forwards everything up to ReadyForQuery to the client.
func (s *Server) startup(client net.Conn, up *upstream, protocol uint32, params pgwire.Params, token string) ([]byte, error) {
	if _, err := up.conn.Write(pgwire.AppendStartup(nil, protocol, params)); err != nil {
		return nil, upstreamErr(up.target, "send startup", err)
	}
	br := bufio.NewReaderSize(up.conn, 4096)
	var out, buf []byte
	for {
		m, err := pgwire.ReadMessage(br, buf, maxUpstreamMsg)
		if err != nil {
			return nil, upstreamErr(up.target, "read startup reply", err)
		}
		buf = m.Raw[:0]
		switch m.Type {
		case pgwire.MsgAuth:
			if out, err = s.authStep(client, up, m, token, out); err != nil {
				return nil, err
			}
			continue
		case pgwire.MsgBackendKeyData:
			if key, err := pgwire.BackendKey(m); err == nil {
				up.key, up.hasKey = key, true
			}
		case pgwire.MsgErrorResponse:
			return nil, &refusedUpstream{reply: append(out, m.Raw...), code: upstreamCode(m), message: pgwire.ErrorText(m)}
		}
		out = append(out, m.Raw...)
		if m.Type == pgwire.MsgReadyForQuery {
			if _, err := client.Write(out); err != nil {
				return nil, fmt.Errorf("write startup reply to client: %w", err)
			}
			pending, _ := br.Peek(br.Buffered())
			return append([]byte(nil), pending...), nil
		}
	}
}

// authStep handles one authentication request from the upstream. out is
// the batch of messages not yet written to the client.
func (s *Server) authStep(client net.Conn, up *upstream, m pgwire.Message, token string, out []byte) ([]byte, error) {
	code := m.AuthCode()
	if up.target.Auth == discovery.AuthIAM {
		switch code {
		case pgwire.AuthOK:
			return append(out, m.Raw...), nil
		case pgwire.AuthCleartextPassword:
			if _, err := up.conn.Write(pgwire.AppendPassword(nil, token)); err != nil {
				return nil, upstreamErr(up.target, "send token", err)
			}
			return out, nil
		}
		return nil, pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonUpstreamAuthMethod,
			"rdsproxy: target %q asked for authentication method %d instead of an IAM token", up.target.Name, code).
			WithHint("Check that IAM database authentication is enabled and the user is granted rds_iam.")
	}
	out = append(out, m.Raw...)
	switch code {
	case pgwire.AuthOK, pgwire.AuthSASLFinal:
		return out, nil
	case pgwire.AuthCleartextPassword, pgwire.AuthMD5Password, pgwire.AuthSASL, pgwire.AuthSASLContinue:
		if _, err := client.Write(out); err != nil {
			return nil, fmt.Errorf("forward auth request: %w", err)
		}
		reply, err := s.readAuthReply(client, up.until)
		if err != nil {
			return nil, err
		}
		if _, err := up.conn.Write(reply.Raw); err != nil {
			return nil, upstreamErr(up.target, "forward auth reply", err)
		}
		return out[:0], nil
	}
	return nil, pgwire.Errorf(pgwire.CodeFeatureNotSupported, contract.ReasonUpstreamAuthMethod,
		"rdsproxy: target %q asked for authentication method %d, which rdsproxy cannot relay", up.target.Name, code)
}

// readAuthReply reads a passthrough client's answer to the database's
// authentication request within PasswordTimeout, as an IAM client's token:
// the client holds a session slot and the database a connection
// meanwhile, and an honest client answers at once (libpq and the JDBC
// driver ask their user for a password before they connect, not while the
// database waits). The client's read deadline then returns to the end of
// the login, until.
func (s *Server) readAuthReply(client net.Conn, until time.Time) (pgwire.Message, error) {
	end := until.Add(time.Second) // the client's deadline during the login (Server.session)
	if by := time.Now().Add(s.cfg.PasswordTimeout); by.Before(end) {
		end = by
	}
	client.SetReadDeadline(end)
	reply, err := pgwire.ReadMessage(client, nil, maxAuthMsgSize)
	client.SetReadDeadline(until.Add(time.Second))
	switch {
	case isTimeout(err):
		return reply, startupTimeout("answer the database's password request",
			"Send the password as soon as the database asks for it; a connection that waits holds a session slot and is closed after a few seconds (--password-timeout).")
	case err != nil:
		return reply, fmt.Errorf("read client auth reply: %w", err)
	}
	return reply, nil
}

// refusedUpstream: the upstream sent an ErrorResponse (SQLSTATE code)
// during startup. refuse forwards reply, everything the upstream sent up
// to and including it, once the failure is charged, so a client that
// retries at once already meets the spent budget.
type refusedUpstream struct {
	reply   []byte
	code    string
	message string // the database's sentence, for the audit line
}

func (r *refusedUpstream) Error() string { return "upstream refused the session" }

func upstreamErr(t *discovery.Target, what string, err error) *pgwire.Error {
	if isTimeout(err) {
		return pgwire.Errorf(pgwire.CodeConnectionFailure, contract.ReasonUpstreamTimeout,
			"rdsproxy: target %q did not finish the login in time (%s)", t.Name, what).
			WithHint("The database may be busy: try again in a moment. If it keeps happening, check its load and connection count.")
	}
	return pgwire.Errorf(pgwire.CodeConnectionFailure, contract.ReasonUpstreamIO,
		"rdsproxy: connection to target %q failed (%s): %v", t.Name, what, err)
}

// refuse tells the client why its session ends (unless the upstream
// already did), charges a failed upstream login to the caller's budget,
// and writes the audit line. ph is nil once the startup phase is over.
func (s *Server) refuse(client net.Conn, ph *phase, info sessionInfo, err error) {
	if ph != nil && ph.pc.evicted.Load() {
		err = evictedError()
	}
	var pe *pgwire.Error
	var ru *refusedUpstream
	o, reason, code := outcomeFailed, "client-io", ""
	switch {
	case errors.As(err, &ru):
		o, code = outcomeRefusedUpstream, ru.code
		reason = upstreamPrefix + code
		if strings.HasPrefix(code, "28") {
			s.failures.fail(info.keyID, info.src, time.Now())
		}
	case errors.As(err, &pe):
		o, reason, code = outcomeRefused, pe.Reason, pe.Code
	}
	// Counted before the client hears it: whoever sees the refusal then
	// finds it in the metrics too.
	s.cfg.Metrics.sessionEnded(info.target, o, reason, 0, 0, strings.HasPrefix(code, "28"))
	switch {
	case ru != nil:
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(ru.reply)
	case pe != nil:
		pe.Send(client)
	}
	ok, suppressed := s.logs.allow(time.Now())
	if !ok {
		s.cfg.Metrics.logSuppressed()
		return
	}
	var res relay.Result
	switch {
	case o == outcomeFailed:
		res.Err = err
	case ru != nil:
		info.refusal = ru.message
	case pe != nil:
		info.refusal = pe.Message
	}
	s.audit(info, o, reason, res, suppressed)
}

// audit writes the session's audit line. Client-chosen values are
// clipped; suppressed says how many refusal lines were held back before
// this one.
func (s *Server) audit(info sessionInfo, o outcome, reason string, res relay.Result, suppressed int64) {
	attrs := []any{
		"target", info.target, "user", clip(info.user), "database", clip(info.database),
		"application_name", clip(info.app), "remote", info.remote, "access_key_id", clip(info.keyID),
		"arn", info.arn(), "account", info.account(), "role_session", info.roleSession(),
		"start", info.start.UTC().Format(time.RFC3339Nano), "duration_ms", s.cfg.Now().Sub(info.start).Milliseconds(),
		"bytes_from_client", res.ToB, "bytes_to_client", res.ToA, "outcome", string(o),
	}
	if reason != "" {
		attrs = append(attrs, "reason", reason)
	}
	switch res.EndedBy {
	case relay.SideA:
		attrs = append(attrs, "ended_by", "client")
	case relay.SideB:
		attrs = append(attrs, "ended_by", "database")
		// Why: its farewell's code. Only when it ended the session, since a
		// client can RAISE a WARNING of any code and then leave.
		if code := pgwire.EndingCode(res.LastWord); code != "" {
			attrs = append(attrs, "sqlstate", code)
		}
	}
	if info.asked != "" { // not a label: clients choose it
		attrs = append(attrs, "requested_target", clip(info.asked))
	}
	if res.Err != nil {
		attrs = append(attrs, "err", res.Err.Error())
	}
	if info.refusal != "" {
		attrs = append(attrs, "message", clipTo(info.refusal, maxLogMessage))
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	if info.orphanCancelled {
		attrs = append(attrs, "orphan_cancel", true)
	}
	if res.DroppedToA > 0 {
		attrs = append(attrs, "dropped_after_cancel", res.DroppedToA)
	}
	if info.transport != "" {
		attrs = append(attrs, "transport", info.transport)
	}
	if info.stripes != nil {
		st := info.stripes.Stats()
		attrs = append(attrs, "stripes", st.Stripes, "wire_from_client", st.WireIn, "wire_to_client", st.WireOut)
	}
	s.cfg.Audit.Info("session end", attrs...)
}
