package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/server"
)

// pipeListener hands the server the far ends of net.Pipes the test dials.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	select {
	case l.conns <- s:
	case <-time.After(10 * time.Second):
		t.Fatal("the server does not accept")
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	return c
}

type fixedTargets struct{ snap *discovery.Snapshot }

func (f fixedTargets) Current() *discovery.Snapshot { return f.snap }

// startServer serves targets on a pipe listener until the test ends.
func startServer(t *testing.T, targets []discovery.Target, edit func(*server.Config)) *pipeListener {
	t.Helper()
	snap, err := discovery.NewSnapshot(targets, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := server.RootCAs(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{Targets: fixedTargets{snap}, RootCAs: roots}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln
}

var ordersIAM = discovery.Target{Name: "orders", Endpoint: "orders.c1.eu-west-1.rds.amazonaws.com:5432", Region: "eu-west-1",
	Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull, Users: []string{"alice"}}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readMsg(t *testing.T, c net.Conn) pgwire.Message {
	t.Helper()
	m, err := pgwire.ReadMessage(c, nil, 1<<16)
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	return m
}

func readByte(t *testing.T, c net.Conn) byte {
	t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b[0]
}

func decodeError(t *testing.T, m pgwire.Message) *pgproto3.ErrorResponse {
	t.Helper()
	if m.Type != pgwire.MsgErrorResponse {
		t.Fatalf("message %q, want an ErrorResponse", m.Type)
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(m.Body()); err != nil {
		t.Fatal(err)
	}
	return &e
}

func startupMsg(params ...string) []byte {
	var ps pgwire.Params
	for i := 0; i+1 < len(params); i += 2 {
		ps = append(ps, pgwire.Param{Key: params[i], Value: params[i+1]})
	}
	return pgwire.AppendStartup(nil, pgwire.Protocol30, ps)
}

// Startups the server refuses before it dials anything: each gets one
// ErrorResponse with its SQLSTATE, a sentence and (where there is
// something to do) a hint, and the connection closes.
func TestStartupRefusals(t *testing.T) {
	ln := startServer(t, []discovery.Target{ordersIAM}, nil)
	tests := []struct {
		name, code, msg string
		send            []byte
	}{
		{"no target", "28000", "does not name a target", startupMsg("user", "alice")},
		{"unknown target", "28000", `target "billing" is not served`, startupMsg("user", "alice", pgwire.TargetParam, "billing")},
		{"user not allowed", "28000", `does not allow database user "mallory"`, startupMsg("user", "mallory", pgwire.TargetParam, "orders")},
		{"target twice", "08P01", "given more than once", startupMsg("user", "alice", pgwire.TargetParam, "orders", "options", "-c rdsproxy.target=orders")},
		{"stripe of no connection", "08P01", "names no connection", startupMsg(contract.JoinParam, "0123456789abcdef0123456789abcdef")},
		{"stripe without an id", "08P01", "names no connection", startupMsg(contract.JoinParam, "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ln.dial(t)
			write(t, c, tt.send)
			e := decodeError(t, readMsg(t, c))
			if e.Code != tt.code || !strings.Contains(e.Message, tt.msg) || e.Severity != "FATAL" {
				t.Errorf("got %s %q, want %s containing %q", e.Code, e.Message, tt.code, tt.msg)
			}
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("the connection stayed open after the refusal")
			}
		})
	}
}

// An IAM target: the server asks for the password in cleartext and
// checks the token before it dials; a malformed one gets 28P01.
func TestIAMTokenChecked(t *testing.T) {
	ln := startServer(t, []discovery.Target{ordersIAM}, nil)
	c := ln.dial(t)
	write(t, c, startupMsg("user", "alice", pgwire.TargetParam, "orders"))
	if m := readMsg(t, c); m.AuthCode() != pgwire.AuthCleartextPassword {
		t.Fatalf("got %q %d, want a cleartext password request", m.Type, m.AuthCode())
	}
	write(t, c, pgwire.AppendPassword(nil, "not-a-token"))
	e := decodeError(t, readMsg(t, c))
	if e.Code != "28P01" || !strings.Contains(e.Message, "IAM token rejected") || e.Hint == "" {
		t.Fatalf("got %+v, want 28P01 naming the token", e)
	}
}

// Without a certificate the server declines SSL and GSS encryption and
// reads the startup that follows.
func TestServerDeclinesEncryption(t *testing.T) {
	ln := startServer(t, []discovery.Target{ordersIAM}, nil)
	c := ln.dial(t)
	write(t, c, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}) // GSSENCRequest
	if b := readByte(t, c); b != 'N' {
		t.Fatalf("GSSENCRequest answered %q", b)
	}
	write(t, c, pgwire.AppendSSLRequest(nil))
	if b := readByte(t, c); b != 'N' {
		t.Fatalf("SSLRequest answered %q", b)
	}
	write(t, c, startupMsg("user", "alice", pgwire.TargetParam, "orders"))
	if m := readMsg(t, c); m.AuthCode() != pgwire.AuthCleartextPassword {
		t.Fatalf("got %q, want the startup read after the declined requests", m.Type)
	}
}

// GET /v1/targets on the PostgreSQL port lists the targets.
func TestTargetsOverHTTP(t *testing.T) {
	ln := startServer(t, []discovery.Target{ordersIAM}, nil)
	c := ln.dial(t)
	write(t, c, []byte("GET /v1/targets HTTP/1.1\r\nHost: rdsproxy\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Targets []discovery.Target `json:"targets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s, %v", resp.Status, err)
	}
	if len(list.Targets) != 1 || list.Targets[0].Name != "orders" || list.Targets[0].Endpoint != ordersIAM.Endpoint {
		t.Fatalf("targets = %+v", list.Targets)
	}
}

// fakeUpstream plays a PostgreSQL server without TLS for passthrough
// targets: it asks for an md5 password, accepts any, sends
// BackendKeyData and ReadyForQuery, then answers each message with a
// CommandComplete. CancelRequests are reported on cancels.
type fakeUpstream struct {
	addr    string
	cancels chan pgwire.CancelKey
}

var upstreamKey = pgwire.CancelKey{PID: 7, Secret: "\x09\x08\x07\x06"}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	up := &fakeUpstream{cancels: make(chan pgwire.CancelKey, 4)}
	up.addr = serveEach(t, up.serve)
	return up
}

// serveEach listens on a loopback port until the test ends and runs serve
// on each connection (20 s at most), closing it after; it returns the
// address.
func serveEach(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c)
			})
		}
	})
	return ln.Addr().String()
}

func (up *fakeUpstream) serve(c net.Conn) {
	st, err := pgwire.ReadStartup(c, pgwire.DefaultMaxStartupSize)
	if err != nil {
		return
	}
	if st.Kind == pgwire.KindCancel {
		up.cancels <- st.Cancel
		return
	}
	c.Write([]byte{pgwire.MsgAuth, 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4})
	if _, err := pgwire.ReadMessage(c, nil, 1<<10); err != nil {
		return
	}
	out := []byte{pgwire.MsgAuth, 0, 0, 0, 8, 0, 0, 0, 0}
	out = append(out, pgwire.MsgBackendKeyData, 0, 0, 0, 12, 0, 0, 0, 7, 9, 8, 7, 6)
	out = append(out, pgwire.MsgReadyForQuery, 0, 0, 0, 5, 'I')
	c.Write(out)
	for {
		if _, err := pgwire.ReadMessage(c, nil, 1<<16); err != nil {
			return
		}
		c.Write([]byte{'C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0})
	}
}

// A passthrough session: the upstream's md5 request reaches the client
// and its answer the upstream; the rest of the login and the session are
// relayed; a CancelRequest with the session's key on a new connection
// reaches the upstream.
func TestPassthroughSessionAndCancel(t *testing.T) {
	up := startUpstream(t)
	plain := discovery.Target{Name: "plain", Endpoint: up.addr, Auth: discovery.AuthPassthrough, TLS: discovery.TLSDisable}
	ln := startServer(t, []discovery.Target{plain}, nil)
	c := ln.dial(t)
	write(t, c, startupMsg("user", "bob", pgwire.TargetParam, "plain"))
	if m := readMsg(t, c); m.AuthCode() != pgwire.AuthMD5Password {
		t.Fatalf("got %q %d, want the upstream's md5 request", m.Type, m.AuthCode())
	}
	write(t, c, pgwire.AppendPassword(nil, "md5abc"))
	for _, want := range []byte{pgwire.MsgAuth, pgwire.MsgBackendKeyData, pgwire.MsgReadyForQuery} {
		if m := readMsg(t, c); m.Type != want {
			t.Fatalf("got %q, want %q", m.Type, want)
		}
	}
	write(t, c, []byte("Q\x00\x00\x00\x0dselect 1\x00"))
	if m := readMsg(t, c); m.Type != 'C' {
		t.Fatalf("got %q, want the upstream's CommandComplete", m.Type)
	}
	cancel := ln.dial(t)
	write(t, cancel, pgwire.AppendCancel(nil, upstreamKey))
	if k := <-up.cancels; k != upstreamKey {
		t.Fatalf("upstream got cancel %+v", k)
	}
	if _, err := cancel.Read(make([]byte, 1)); err == nil {
		t.Fatal("the cancel connection stayed open")
	}
}

// A second SSLRequest, or a GSSENCRequest once TLS is set up, is refused
// with 08P01 as PostgreSQL refuses it (FATAL, not 'N'), inside TLS when
// TLS was set up. The refusal names its reason in the Routine field.
func TestRepeatedEncryptionRequestRefused(t *testing.T) {
	ca, err := sandbox.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("rdsproxy.test")
	if err != nil {
		t.Fatal(err)
	}
	withTLS := func(c *server.Config) { c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}} }
	gssenc := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}
	tests := []struct {
		name   string
		tls    bool
		first  []byte
		answer byte
		second []byte
	}{
		{"SSLRequest twice, without a certificate", false, pgwire.AppendSSLRequest(nil), 'N', pgwire.AppendSSLRequest(nil)},
		{"GSSENCRequest twice", false, gssenc, 'N', gssenc},
		{"SSLRequest inside TLS", true, pgwire.AppendSSLRequest(nil), 'S', pgwire.AppendSSLRequest(nil)},
		{"GSSENCRequest inside TLS", true, pgwire.AppendSSLRequest(nil), 'S', gssenc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var edit func(*server.Config)
			if tt.tls {
				edit = withTLS
			}
			ln := startServer(t, []discovery.Target{ordersIAM}, edit)
			c := ln.dial(t)
			write(t, c, tt.first)
			if b := readByte(t, c); b != tt.answer {
				t.Fatalf("first request answered %q, want %q", b, tt.answer)
			}
			if tt.answer == 'S' {
				tc := tls.Client(c, &tls.Config{ServerName: "rdsproxy.test", RootCAs: ca.Pool()})
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			write(t, c, tt.second)
			e := decodeError(t, readMsg(t, c))
			if e.Code != "08P01" || e.Routine != contract.Routine(contract.ReasonProtocol) || !strings.Contains(e.Message, "already negotiated") {
				t.Fatalf("got %s %q (routine %q), want 08P01 protocol", e.Code, e.Message, e.Routine)
			}
		})
	}
}

// Refusals carry their reason in the Routine field, for programs to
// branch on. The audit line of a target the server does not serve (one a
// tag change just removed, say) says which name was asked for.
func TestRefusalCarriesReason(t *testing.T) {
	var logs syncbuf.Buffer
	ln := startServer(t, []discovery.Target{ordersIAM}, func(c *server.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	c := ln.dial(t)
	write(t, c, startupMsg("user", "alice", pgwire.TargetParam, "billing"))
	if e := decodeError(t, readMsg(t, c)); e.Routine != "rdsproxy:unknown-target" {
		t.Fatalf("routine %q, want rdsproxy:unknown-target", e.Routine)
	}
	poll(t, 10*time.Second, "the audit line", func() bool { return strings.Contains(logs.String(), "session end") })
	if line := logs.String(); !strings.Contains(line, `target="" user=alice`) || !strings.Contains(line, "requested_target=billing") {
		t.Fatalf("audit line does not name the target asked for:\n%s", line)
	}
	if line := logs.String(); !strings.Contains(line, `message="rdsproxy: target \"billing\" is not served`) {
		t.Fatalf("audit line does not say what the client was told:\n%s", line)
	}
}
