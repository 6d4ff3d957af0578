package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// These tests hold the server against hostile clients: each failed before
// the fix it names (issue "Hold the server against hostile clients").

// withTargets adds targets (and their dial addresses) to the stack's snapshot.
func withTargets(t testing.TB, extra []discovery.Target, dials map[string]string) stackOption {
	return func(c *server.Config) {
		snap, err := discovery.NewSnapshot(append(append([]discovery.Target(nil), sb.targets...), extra...), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.Targets = fixedTargets{snap}
		c.DialOverrides = map[string]string{}
		for k, v := range sb.dials {
			c.DialOverrides[k] = v
		}
		for k, v := range dials {
			c.DialOverrides[k] = v
		}
	}
}

// rawStartup opens a connection to addr and sends one StartupMessage (and
// the password, when not empty) in one write.
func rawStartup(t testing.TB, addr string, protocol uint32, params pgwire.Params, password string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msg := pgwire.AppendStartup(nil, protocol, params)
	if password != "" {
		msg = pgwire.AppendPassword(msg, password)
	}
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	return conn
}

// backendMessages reads what the server sends until it closes the
// connection, an ErrorResponse, or ReadyForQuery.
func backendMessages(t testing.TB, conn net.Conn) []pgproto3.BackendMessage {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	fe := pgproto3.NewFrontend(bufio.NewReader(conn), io.Discard)
	var out []pgproto3.BackendMessage
	for {
		m, err := fe.Receive()
		if err != nil {
			return out
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			c := *m
			return append(out, &c)
		case *pgproto3.ReadyForQuery:
			return append(out, &pgproto3.ReadyForQuery{TxStatus: m.TxStatus})
		case *pgproto3.AuthenticationCleartextPassword:
			out = append(out, &pgproto3.AuthenticationCleartextPassword{})
		case *pgproto3.NegotiateProtocolVersion:
			out = append(out, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: m.NewestMinorProtocol,
				UnrecognizedOptions: append([]string(nil), m.UnrecognizedOptions...)})
		}
	}
}

// errorOf returns the ErrorResponse a raw connection ended with.
func errorOf(t testing.TB, conn net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	msgs := backendMessages(t, conn)
	if len(msgs) > 0 {
		if e, ok := msgs[len(msgs)-1].(*pgproto3.ErrorResponse); ok {
			return e
		}
	}
	t.Fatalf("the server sent %#v, want it to end with an ErrorResponse", msgs)
	return nil
}

// A key given twice is refused before any dial: PostgreSQL uses the last
// copy, so checking the first let `user=pw_user, user=secret_admin` pass
// the users allow-list as pw_user and log in as secret_admin.
func TestRepeatedStartupKeysRefused(t *testing.T) {
	pw := discovery.Target{Name: "pwonly", Endpoint: "pwonly.sandbox.internal:5432", Auth: discovery.AuthPassthrough,
		TLS: discovery.TLSVerifyFull, Users: []string{"pw_user"}, Source: "static"}
	st := startStack(t, withTargets(t, []discovery.Target{pw}, map[string]string{pw.Endpoint: sb.pg.Addr()}))
	now := nowUTC()
	token := sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, now)
	tests := []struct {
		name   string
		params pgwire.Params
		want   string
	}{
		{"user twice on an allow-listed passthrough target", pgwire.Params{{Key: "user", Value: "pw_user"},
			{Key: "rdsproxy.target", Value: "pwonly"}, {Key: "user", Value: "secret_admin"}}, `"user" is given more than once`},
		{"database twice on an IAM target", pgwire.Params{{Key: "user", Value: sandbox.UserIAM}, {Key: "database", Value: "app"},
			{Key: "rdsproxy.target", Value: "app"}, {Key: "database", Value: "postgres"}}, `"database" is given more than once`},
		{"target as a parameter and inside options", pgwire.Params{{Key: "user", Value: sandbox.UserIAM},
			{Key: "rdsproxy.target", Value: "app"}, {Key: "options", Value: "-c rdsproxy.target=ro"}}, `"rdsproxy.target" is given more than once`},
		{"target twice inside options", pgwire.Params{{Key: "user", Value: sandbox.UserIAM},
			{Key: "options", Value: "-c rdsproxy.target=app --rdsproxy.target=ro"}}, `"rdsproxy.target" is given more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := sb.emu.Accepted()
			e := errorOf(t, rawStartup(t, st.serverAddr, pgwire.Protocol30, tt.params, token))
			if e.Code != "08P01" || !strings.Contains(e.Message, tt.want) || e.Hint == "" {
				t.Fatalf("got %s %q (hint %q), want 08P01 with %q and a hint", e.Code, e.Message, e.Hint, tt.want)
			}
			if sb.emu.Accepted() != before {
				t.Fatal("the emulator was dialed for a refused startup")
			}
		})
	}
}

// Connections that sent a StartupMessage but no token take no session
// slot: with every slot's worth of them waiting, an honest client still
// logs in, and each waiting one is told why it is closed.
func TestStalledStartupsHoldNoSessionSlots(t *testing.T) {
	st := startStack(t, func(c *server.Config) { c.MaxSessions = 3; c.PasswordTimeout = 2 * time.Second })
	var stalled []net.Conn
	for range 20 {
		stalled = append(stalled, rawStartup(t, st.serverAddr, pgwire.Protocol30,
			pgwire.Params{{Key: "user", Value: sandbox.UserIAM}, {Key: "rdsproxy.target", Value: "app"}}, ""))
	}
	for range 3 { // all three slots, while twenty startups wait for their tokens
		connectLocal(t, st.local["app"], sandbox.UserIAM)
	}
	msgs := backendMessages(t, stalled[0])
	if len(msgs) != 2 {
		t.Fatalf("a stalled startup got %#v, want a password request and an ErrorResponse", msgs)
	}
	if e, ok := msgs[1].(*pgproto3.ErrorResponse); !ok || e.Code != "08006" || !strings.Contains(e.Message, "did not send its password") {
		t.Fatalf("a stalled startup ended with %#v, want 08006 naming the password", msgs[1])
	}
}

// A flood of hostile connections from the one address every client has
// behind SSM (idle sockets, startups that never send the token, half
// startups and half HTTP requests) at up to 1,000 a second: honest logins
// keep succeeding, and the connections pushed out are told so (53300, or
// an HTTP 503).
func TestHostileFloodDoesNotLockOutHonestClients(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	// The default caps: 512, 256 per source. A first byte waited for 20 s,
	// not 5, fills them at a quarter of the flood's rate: a loaded machine
	// that opens connections slowly still fills them.
	st := startStack(t, func(c *server.Config) { c.Metrics, c.FirstByteTimeout = metrics, 20*time.Second })
	ctx, stop := context.WithCancel(context.Background())
	var flood sync.WaitGroup
	var opened, evicted atomic.Int64
	flood.Add(1)
	go func() {
		defer flood.Done()
		hostileFlood(ctx, st.serverAddr, &flood, &opened, &evicted)
	}()
	start := time.Now()
	honest := 0
	for ; honest < 30 || time.Since(start) < 5*time.Second; honest++ { // a short soak
		conn, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
		if err != nil {
			stop()
			flood.Wait()
			t.Fatalf("honest login %d during the flood: %v", honest+1, err)
		}
		conn.Close(context.Background())
	}
	stop()
	flood.Wait()
	elapsed := time.Since(start)
	t.Logf("%d honest logins while %d hostile connections arrived (%.0f/s); %d told they were evicted",
		honest, opened.Load(), float64(opened.Load())/elapsed.Seconds(), evicted.Load())
	if evicted.Load() == 0 {
		t.Fatal("no hostile connection was evicted: the flood never filled the pending caps, so it tested nothing")
	}
	if got := counterValue(t, reg, "rdsproxy_connections_refused_total", "reason", "evicted"); got == 0 {
		t.Error("rdsproxy_connections_refused_total{reason=\"evicted\"} is 0")
	}
}

// counterValue sums the counter name in reg over the series whose labels
// include the given name=value pairs.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// hostileFlood opens up to 1,000 connections a second until ctx ends, in
// four kinds, and counts those the server tells it evicted them.
func hostileFlood(ctx context.Context, addr string, wg *sync.WaitGroup, opened, evicted *atomic.Int64) {
	startup := pgwire.AppendStartup(nil, pgwire.Protocol30,
		pgwire.Params{{Key: "user", Value: sandbox.UserIAM}, {Key: "rdsproxy.target", Value: "app"}})
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := 0; ; i++ {
		if int64(i) >= time.Since(start).Milliseconds() { // ahead of 1,000 a second: wait
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		opened.Add(1)
		switch i % 4 {
		case 1: // a startup that never sends its token
			conn.Write(startup)
		case 2: // half a startup
			conn.Write(startup[:7])
		case 3: // half a GET /v1/targets
			conn.Write([]byte("GET /v1/tar"))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
			defer stop()
			reply, _ := io.ReadAll(io.LimitReader(conn, 4096))
			if strings.Contains(string(reply), "to make room") { // 53300, or an HTTP 503
				evicted.Add(1)
			}
		}()
	}
}

// Well-formed tokens with forged signatures cost an upstream login each
// until the caller's failure budget is spent; then they are refused
// before any dial. (The budget refills slowly enough here that a loaded
// machine cannot refill it mid-test; TestFailureBudgets covers refills.)
func TestForgedTokensAreThrottled(t *testing.T) {
	st := startStack(t, func(c *server.Config) {
		c.AuthFailures = server.AuthFailureLimit{PerKey: 3, PerKeyRate: 0.001, PerSource: 1000, PerSourceRate: 1000}
	})
	ctx := context.Background()
	forge := func() string {
		tok := sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC())
		sig := make([]byte, 32)
		rand.Read(sig)
		head, _, _ := strings.Cut(tok, "X-Amz-Signature=")
		return head + "X-Amz-Signature=" + hex.EncodeToString(sig)
	}
	for i := range 3 { // the budget: each one reaches the emulator, which refuses it as RDS would
		before := sb.emu.Accepted()
		_, err := pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, forge()))
		pgErr(t, err, "28P01", "PAM authentication failed")
		if sb.emu.Accepted() == before {
			t.Fatalf("forged token %d was not checked upstream", i+1)
		}
	}
	before := sb.emu.Accepted()
	for range 5 {
		_, err := pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, forge()))
		pgErr(t, err, "28P01", "too many failed logins from this access key")
	}
	if sb.emu.Accepted() != before {
		t.Fatalf("%d forged tokens were dialed upstream after the budget was spent", sb.emu.Accepted()-before)
	}
}

// Refusals cannot flood the log: client-chosen fields are clipped, lines
// past the rate are held back and counted, and the next line says how
// many were.
func TestRefusalLogsAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	audit := &logBuffer{}
	st := startStack(t, func(c *server.Config) {
		c.Metrics = server.NewMetrics(reg)
		c.Logger = audit.jsonLogger()
		c.RefusalLogRate, c.RefusalLogBurst = 0.5, 10
	})
	ctx := context.Background()
	huge := strings.Repeat("u", 9000)
	const refusals = 200
	start := time.Now()
	for range refusals {
		_, err := pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "ghost", huge, "x"))
		pgErr(t, err, "28000", "not served")
	}
	// The client has its ErrorResponse before the server writes (or holds
	// back) the line: wait until every refusal is accounted for.
	var logged int
	var suppressed float64
	waitFor(t, 30*time.Second, "every refusal to be logged or counted", func() bool {
		logged = strings.Count(audit.String(), `"msg":"session end"`)
		suppressed = counterValue(t, reg, "rdsproxy_log_lines_suppressed_total")
		return logged+int(suppressed) >= refusals
	})
	if most := 10 + int(time.Since(start).Seconds()/2) + 1; logged > most || logged < 10 {
		t.Fatalf("%d audit lines for %d refusals in %s, want the burst of 10 and at most %d", logged, refusals, time.Since(start), most)
	}
	if n := len(audit.String()); n > 20*1024 {
		t.Fatalf("the refusals wrote %d bytes of log; a 9,000-byte user must be clipped", n)
	}
	if !strings.Contains(audit.String(), `uuuu…(9000 bytes)`) {
		t.Fatal("the clipped user does not say how long it was")
	}
	if int(suppressed)+logged != refusals {
		t.Fatalf("%d lines logged + %v suppressed != %d refusals", logged, suppressed, refusals)
	}
	waitFor(t, 30*time.Second, "a line that reports the suppressed ones", func() bool {
		pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "ghost", "u", "x"))
		return strings.Contains(audit.String(), `"suppressed":`)
	})
}

// A token that claims a 7-day lifetime, signed 24 hours ago with valid
// credentials, is refused before any dial: RDS tokens live 15 minutes.
func TestLongLivedTokenRefused(t *testing.T) {
	st := startStack(t)
	tok, err := iamtoken.SignAt(context.Background(), appEndpoint, sandbox.Region, sandbox.UserIAM, sandbox.Credentials(),
		nowUTC().Add(-24*time.Hour), 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sb.tokens.remember(tok)
	before := sb.emu.Accepted()
	_, err = pgx.ConnectConfig(context.Background(), serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, tok))
	pgErr(t, err, "28P01", "RDS tokens live at most 15m0s")
	if sb.emu.Accepted() != before {
		t.Fatal("the emulator was dialed for a 7-day token")
	}
}

// With a certificate and RequireTLS, plaintext clients are refused with a
// sentence naming sslmode, before they can send a token in clear; TLS
// clients are served.
func TestRequireTLS(t *testing.T) {
	cert, err := sb.ca.Issue("rdsproxy.sandbox.internal")
	if err != nil {
		t.Fatal(err)
	}
	st := startStack(t, func(c *server.Config) {
		c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		c.RequireTLS = true
	})
	ctx := context.Background()
	plain := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	_, err = pgx.ConnectConfig(ctx, plain)
	pgErr(t, err, "28000", "accepts only TLS")
	e := errorOf(t, rawStartup(t, st.serverAddr, pgwire.Protocol30,
		pgwire.Params{{Key: "user", Value: sandbox.UserIAM}, {Key: "rdsproxy.target", Value: "app"}}, "token-in-clear"))
	if !strings.Contains(e.Hint, "sslmode=require") {
		t.Fatalf("hint %q does not name sslmode", e.Hint)
	}
	secure := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	secure.TLSConfig = &tls.Config{RootCAs: sb.ca.Pool(), ServerName: "rdsproxy.sandbox.internal", MinVersion: tls.VersionTLS12}
	conn, err := pgx.ConnectConfig(ctx, secure)
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	conn.Close(ctx)
}

// A protocol version newer than rdsproxy knows is answered by rdsproxy
// itself with NegotiateProtocolVersion 3.0, listing the protocol options
// it dropped, and the session then works; it used to be forwarded as is.
func TestNewerProtocolNegotiatedDown(t *testing.T) {
	st := startStack(t)
	tok := sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC())
	conn := rawStartup(t, st.serverAddr, 3<<16|9999, pgwire.Params{{Key: "user", Value: sandbox.UserIAM},
		{Key: "database", Value: "app"}, {Key: "rdsproxy.target", Value: "app"}, {Key: "_pq_.future", Value: "1"}}, tok)
	msgs := backendMessages(t, conn)
	if len(msgs) < 3 {
		t.Fatalf("got %#v", msgs)
	}
	v, ok := msgs[0].(*pgproto3.NegotiateProtocolVersion)
	if !ok || v.NewestMinorProtocol != pgwire.Protocol30 || len(v.UnrecognizedOptions) != 1 || v.UnrecognizedOptions[0] != "_pq_.future" {
		t.Fatalf("first message %#v, want NegotiateProtocolVersion 3.0 listing _pq_.future", msgs[0])
	}
	if _, ok := msgs[len(msgs)-1].(*pgproto3.ReadyForQuery); !ok {
		t.Fatalf("the session did not become ready: %#v", msgs[len(msgs)-1])
	}
}

// A database that accepts the connection but never finishes the login
// gets the client a 08006 sentence at the login timeout, not a bare EOF.
func TestSlowUpstreamLoginGetsASentence(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	t.Cleanup(func() { ln.Close(); held.Wait() })
	held.Add(1)
	go func() { // a database that reads the startup and then says nothing
		defer held.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { defer held.Done(); defer c.Close(); io.Copy(io.Discard, c) }()
		}
	}()
	slow := discovery.Target{Name: "slow", Endpoint: "slow.sandbox.internal:5432",
		Auth: discovery.AuthPassthrough, TLS: discovery.TLSDisable, Source: "static"}
	st := startStack(t, withTargets(t, []discovery.Target{slow}, map[string]string{slow.Endpoint: ln.Addr().String()}),
		func(c *server.Config) {
			c.StartupTimeout, c.DialTimeout, c.LoginTimeout = time.Second, time.Second, 3*time.Second
		})
	_, err = pgx.ConnectConfig(context.Background(), serverConfig(t, st.serverAddr, "slow", "u", "x"))
	pgErr(t, err, "08006", `target "slow" did not finish the login in time`)
}

// A JDBC-style pool opening 200 connections at once through rdsproxy: all
// succeed (the emulator holds such a burst, as RDS does).
func TestLoginBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the 200-login burst")
	}
	st := startStack(t)
	const n = 200
	errs := make(chan error, n)
	var conns sync.WaitGroup
	release := make(chan struct{})
	for range n {
		conns.Add(1)
		go func() {
			defer conns.Done()
			c, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
			errs <- err
			if err == nil {
				<-release
				c.Close(context.Background())
			}
		}()
	}
	var failed []string
	for range n {
		if err := <-errs; err != nil {
			failed = append(failed, err.Error())
		}
	}
	close(release)
	conns.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d logins failed; first: %s", len(failed), n, failed[0])
	}
}

// The real binary: --tls-cert alone makes the server refuse a plaintext
// startup with 28000 and a hint naming sslmode, before it asks for the
// token; --allow-plaintext lets the same startup through to routing (it
// used to be let through by default).
func TestBinaryCertificateRequiresTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeServerCert(t, dir)
	conf := filepath.Join(dir, "server.yaml")
	static := "targets:\n  - name: plain\n    endpoint: pg.sandbox.internal:5432\n    auth: passthrough\n    tls: disable\n"
	if err := os.WriteFile(conf, []byte(static), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, code, want, reason string
		extra                    []string
	}{
		{"certificate only", "28000", "accepts only TLS", "tls-required", nil},
		{"with --allow-plaintext", "28000", `target "ghost" is not served`, "unknown-target", []string{"--allow-plaintext"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out, addr, admin := startCertServer(t, certFile, keyFile, append([]string{"--config", conf}, tc.extra...)...)
			waitFor(t, 60*time.Second, "server ready", func() bool {
				resp, err := http.Get("http://" + admin + "/readyz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			e := errorOf(t, rawStartup(t, addr, pgwire.Protocol30,
				pgwire.Params{{Key: "user", Value: "u"}, {Key: "rdsproxy.target", Value: "ghost"}}, ""))
			if e.Code != tc.code || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("plaintext startup: %s %q, want %s with %q\n%s", e.Code, e.Message, tc.code, tc.want, out.String())
			}
			if tc.extra == nil && !strings.Contains(e.Hint, "sslmode=require") {
				t.Fatalf("hint %q does not name sslmode", e.Hint)
			}
			// The refusal has its audit line, which says who was refused and why.
			waitFor(t, 10*time.Second, "the refusal's audit line", func() bool {
				log := out.String()
				return strings.Contains(log, `msg="session end"`) && strings.Contains(log, "user=u") && strings.Contains(log, "reason="+tc.reason)
			})
		})
	}
}

// writeServerCert writes a sandbox-CA certificate for the server and its
// key (mode 0600) into dir.
// startCertServer starts the binary with --tls-cert and --tls-key on free
// loopback addresses, without AWS, until the test ends; out collects its
// log.
func startCertServer(t *testing.T, certFile, keyFile string, extra ...string) (cmd *exec.Cmd, out *logBuffer, addr, admin string) {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	addr, admin = closedAddr(), closedAddr()
	cmd = exec.Command(bin, append([]string{"server", "--listen", addr, "--admin-addr", admin,
		"--tls-cert", certFile, "--tls-key", keyFile, "--server-id", "e2e"}, extra...)...)
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true")
	out = &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, out, addr, admin
}

func writeServerCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	cert, err := sb.ca.Issue("rdsproxy.sandbox.internal")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// SIGHUP reads --tls-cert and --tls-key again: new connections get the
// rotated certificate without a restart (and its drain); a pair that does
// not load is logged, and the previous certificate stays in use. Rotation
// used to need a restart, and the reload said nothing about it.
func TestBinarySIGHUPReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeServerCert(t, dir)
	cmd, out, addr, _ := startCertServer(t, certFile, keyFile)
	served := func() string { // the serial of the certificate a new connection gets
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return ""
		}
		defer c.Close()
		tc, err := pgwire.RequestTLS(context.Background(), c, func(c net.Conn) *tls.Conn {
			return tls.Client(c, &tls.Config{RootCAs: sb.ca.Pool(), ServerName: "rdsproxy.sandbox.internal", MinVersion: tls.VersionTLS12})
		})
		if err != nil {
			return ""
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	var serial string
	next := func() string { // the next connection's certificate, retried past a failed dial
		waitFor(t, 60*time.Second, "a TLS connection to the server", func() bool { serial = served(); return serial != "" })
		return serial
	}
	first := next()
	writeServerCert(t, dir) // rotated in place, as cert-manager or an ACME client does
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the rotated certificate served", func() bool { return next() != first })
	rotated := next()
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the failed reload logged", func() bool {
		return strings.Contains(out.String(), "TLS certificate reload failed; new connections still get the previous one")
	})
	if s := next(); s != rotated {
		t.Fatalf("after a failed reload the server serves %q, want the previous certificate %q", s, rotated)
	}
	if !strings.Contains(out.String(), `msg="TLS certificate reloaded" not_after=`) {
		t.Fatalf("the reload's log does not say the certificate was reloaded:\n%s", out.String())
	}
}
