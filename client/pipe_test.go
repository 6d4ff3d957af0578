package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// pipeListener hands the proxy the far ends of net.Pipes the test dials.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
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

func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	select {
	case l.conns <- s:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy does not accept")
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	return c
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// pipeTunnel is a tunnel whose streams are net.Pipes; the test plays the
// rdsproxy server on the far ends, which arrive on streams.
type pipeTunnel struct {
	streams chan net.Conn
	dialErr error
}

func (p *pipeTunnel) Dial(ctx context.Context) (net.Conn, error) {
	if p.dialErr != nil {
		return nil, p.dialErr
	}
	c, s := net.Pipe()
	select {
	case p.streams <- s:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeTunnel) Close() error { return nil }

// next is the server's end of the next stream the proxy opens.
func (p *pipeTunnel) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case s := <-p.streams:
		t.Cleanup(func() { s.Close() })
		s.SetDeadline(time.Now().Add(20 * time.Second))
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy opened no stream to the server")
		return nil
	}
}

type fixedTokens struct {
	token string
	err   error
	asked chan string
}

func (f *fixedTokens) Get(_ context.Context, endpoint, region, user string) (string, error) {
	if f.asked != nil {
		f.asked <- endpoint + " " + region + " " + user
	}
	return f.token, f.err
}

var (
	iamTarget  = contract.Target{Name: "orders", Endpoint: "orders.example:5432", Region: "eu-west-1", Auth: contract.AuthIAM, TLS: contract.TLSVerifyFull}
	passTarget = contract.Target{Name: "plain", Endpoint: "plain.example:5432", Auth: contract.AuthPassthrough, TLS: contract.TLSDisable}
)

// startProxy serves cfg on a pipe listener until the test ends.
func startProxy(t *testing.T, cfg client.Config) (*pipeListener, *pipeTunnel) {
	t.Helper()
	if cfg.Tunnel == nil {
		cfg.Tunnel = &pipeTunnel{streams: make(chan net.Conn)}
	}
	tun, _ := cfg.Tunnel.(*pipeTunnel)
	if cfg.Tokens == nil {
		cfg.Tokens = &fixedTokens{token: "the-token"}
	}
	p, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	serveOn(t, p, ln)
	return ln, tun
}

// serveOn runs p.Serve on ln until stop, which the test's end calls too,
// and which returns Serve's error once it has returned.
func serveOn(t *testing.T, p *client.Proxy, ln net.Listener) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return stop
}

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

func readStartup(t *testing.T, c net.Conn) *pgwire.Startup {
	t.Helper()
	st, err := pgwire.ReadStartup(c, pgwire.DefaultMaxStartupSize)
	if err != nil {
		t.Fatalf("read startup: %v", err)
	}
	return st
}

func readByte(t *testing.T, c net.Conn) byte {
	t.Helper()
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
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

func appendReady(dst []byte) []byte {
	return append(dst, pgwire.MsgReadyForQuery, 0, 0, 0, 5, 'I')
}

func appendAuthOK(dst []byte) []byte {
	return append(dst, pgwire.MsgAuth, 0, 0, 0, 8, 0, 0, 0, 0)
}

// An IAM target: the client sends the startup with rdsproxy.target and
// the token in one write, swallows the server's password request, and
// relays what follows both ways. rdsproxy.* settings the local client
// sent are dropped.
func TestExchangeIAM(t *testing.T) {
	tokens := &fixedTokens{token: "signed-token", asked: make(chan string, 1)}
	ln, tun := startProxy(t, client.Config{Target: iamTarget, Tokens: tokens})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice", "database", "app", "options", "-c rdsproxy.target=elsewhere -c geqo=off", "rdsproxy.other", "x"))
	server := tun.next(t)
	st := readStartup(t, server)
	want := pgwire.Params{{Key: "user", Value: "alice"}, {Key: "database", Value: "app"}, {Key: "options", Value: "-c geqo=off"}, {Key: pgwire.TargetParam, Value: "orders"}}
	if st.Kind != pgwire.KindStartup || len(st.Params) != len(want) {
		t.Fatalf("server got %+v, want params %v", st, want)
	}
	for i := range want {
		if st.Params[i] != want[i] {
			t.Errorf("param %d = %v, want %v", i, st.Params[i], want[i])
		}
	}
	if got := <-tokens.asked; got != "orders.example:5432 eu-west-1 alice" {
		t.Errorf("token asked for %q", got)
	}
	if tok, err := pgwire.PasswordText(readMsg(t, server)); err != nil || tok != "signed-token" {
		t.Fatalf("password = %q, %v", tok, err)
	}
	write(t, server, pgwire.AppendAuthCleartext(nil))
	write(t, server, appendReady(appendAuthOK(nil)))
	if m := readMsg(t, local); m.AuthCode() != pgwire.AuthOK {
		t.Fatalf("local got %q (auth code %d), want AuthenticationOk: the password request is the proxy's to answer", m.Type, m.AuthCode())
	}
	if m := readMsg(t, local); m.Type != pgwire.MsgReadyForQuery {
		t.Fatalf("local got %q, want ReadyForQuery", m.Type)
	}
	write(t, local, []byte("Q\x00\x00\x00\x0dselect 1\x00"))
	if m := readMsg(t, server); m.Type != 'Q' {
		t.Fatalf("server got %q, want the query relayed", m.Type)
	}
}

// A passthrough target: no token; the server's first reply (here an md5
// request) reaches the local client.
func TestExchangePassthrough(t *testing.T) {
	tokens := &fixedTokens{err: errors.New("no token for passthrough")}
	ln, tun := startProxy(t, client.Config{Target: passTarget, Tokens: tokens})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "bob"))
	server := tun.next(t)
	if st := readStartup(t, server); st.Kind != pgwire.KindStartup {
		t.Fatalf("server got %+v", st)
	}
	md5 := []byte{pgwire.MsgAuth, 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4}
	write(t, server, md5)
	if m := readMsg(t, local); m.AuthCode() != pgwire.AuthMD5Password {
		t.Fatalf("local got %q %d, want the md5 request", m.Type, m.AuthCode())
	}
}

// The server's refusal reaches the local client as it was sent.
func TestExchangeForwardsRefusal(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: iamTarget})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice"))
	server := tun.next(t)
	readStartup(t, server)
	readMsg(t, server)
	refusal := (&pgwire.Error{Code: pgwire.CodeInvalidAuthSpec, Message: "rdsproxy: not you", Hint: "ask"}).AppendTo(nil)
	write(t, server, refusal)
	e := decodeError(t, readMsg(t, local))
	if e.Code != "28000" || e.Message != "rdsproxy: not you" || e.Hint != "ask" {
		t.Fatalf("local got %+v", e)
	}
}

// Failures on the client's side are ErrorResponses with a SQLSTATE and a
// sentence: no token (28000), no stream to the server (08001), a server
// that hangs up during the startup (08006).
func TestExchangeFailures(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		ln, _ := startProxy(t, client.Config{Target: iamTarget, Tokens: &fixedTokens{err: errors.New("expired SSO session")}})
		local := ln.dial(t)
		write(t, local, startupMsg("user", "alice"))
		e := decodeError(t, readMsg(t, local))
		if e.Code != "28000" || e.Hint == "" {
			t.Fatalf("got %+v, want 28000 with a hint", e)
		}
	})
	t.Run("tunnel", func(t *testing.T) {
		ln, _ := startProxy(t, client.Config{Target: iamTarget, Tunnel: &pipeTunnel{dialErr: errors.New("ssm session ended")}})
		local := ln.dial(t)
		write(t, local, startupMsg("user", "alice"))
		if e := decodeError(t, readMsg(t, local)); e.Code != "08001" {
			t.Fatalf("got %+v, want 08001", e)
		}
	})
	t.Run("server hangs up", func(t *testing.T) {
		ln, tun := startProxy(t, client.Config{Target: iamTarget})
		local := ln.dial(t)
		write(t, local, startupMsg("user", "alice"))
		for range 2 { // the second stream is the retry
			server := tun.next(t)
			readStartup(t, server)
			readMsg(t, server)
			server.Close()
		}
		if e := decodeError(t, readMsg(t, local)); e.Code != "08006" || e.Hint == "" {
			t.Fatalf("got %+v, want 08006 with a hint", e)
		}
	})
	t.Run("server hangs up mid-message", func(t *testing.T) {
		ln, tun := startProxy(t, client.Config{Target: iamTarget})
		local := ln.dial(t)
		write(t, local, startupMsg("user", "alice"))
		server := tun.next(t)
		readStartup(t, server)
		readMsg(t, server)
		write(t, server, []byte{pgwire.MsgAuth, 0}) // a byte was sent: no retry
		server.Close()
		if e := decodeError(t, readMsg(t, local)); e.Code != "08006" {
			t.Fatalf("got %+v, want 08006", e)
		}
	})
}

// A stream that ends before the server sent a byte (a replica draining or
// gone: nothing reached the database) is tried once more on a new stream,
// and the local client never notices.
func TestExchangeRetriesUnansweredStream(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: iamTarget})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice"))
	first := tun.next(t)
	readStartup(t, first)
	readMsg(t, first)
	first.Close()
	second := tun.next(t)
	if st := readStartup(t, second); st.Kind != pgwire.KindStartup {
		t.Fatalf("retry sent %+v", st)
	}
	if tok, err := pgwire.PasswordText(readMsg(t, second)); err != nil || tok != "the-token" {
		t.Fatalf("retry password = %q, %v", tok, err)
	}
	write(t, second, pgwire.AppendAuthCleartext(nil))
	write(t, second, appendReady(appendAuthOK(nil)))
	if m := readMsg(t, local); m.AuthCode() != pgwire.AuthOK {
		t.Fatalf("local got %q (auth code %d), want AuthenticationOk from the second stream", m.Type, m.AuthCode())
	}
}

// Without LocalTLS the local listener declines SSL and GSS encryption
// and goes on with the startup.
func TestLocalEncryptionDeclined(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: passTarget})
	local := ln.dial(t)
	write(t, local, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}) // GSSENCRequest
	if b := readByte(t, local); b != 'N' {
		t.Fatalf("GSSENCRequest answered %q", b)
	}
	write(t, local, pgwire.AppendSSLRequest(nil))
	if b := readByte(t, local); b != 'N' {
		t.Fatalf("SSLRequest answered %q", b)
	}
	write(t, local, startupMsg("user", "bob"))
	if st := readStartup(t, tun.next(t)); st.Kind != pgwire.KindStartup {
		t.Fatalf("server got %+v", st)
	}
}

// A CancelRequest goes to the server on a stream of its own; the local
// connection closes once the server has closed that stream.
func TestCancelForwarded(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: iamTarget})
	local := ln.dial(t)
	key := pgwire.CancelKey{PID: 42, Secret: "\x01\x02\x03\x04"}
	write(t, local, pgwire.AppendCancel(nil, key))
	server := tun.next(t)
	st := readStartup(t, server)
	if st.Kind != pgwire.KindCancel || st.Cancel != key {
		t.Fatalf("server got %+v, want the cancel for %+v", st, key)
	}
	closed := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := local.Read(b[:])
		closed <- err
	}()
	write(t, server, []byte{0}) // taken: the proxy still waits for the server
	select {
	case err := <-closed:
		t.Fatalf("the local connection ended (%v) before the server closed the cancel's stream", err)
	default:
	}
	server.Close()
	if err := <-closed; err == nil {
		t.Fatal("the local connection stayed open after the cancel")
	}
}

// A second SSLRequest is refused with 08P01, as PostgreSQL and the
// server refuse it, instead of being declined again.
func TestLocalRepeatedSSLRequestRefused(t *testing.T) {
	ln, _ := startProxy(t, client.Config{Target: passTarget})
	local := ln.dial(t)
	write(t, local, pgwire.AppendSSLRequest(nil))
	if b := readByte(t, local); b != 'N' {
		t.Fatalf("SSLRequest answered %q", b)
	}
	write(t, local, pgwire.AppendSSLRequest(nil))
	if e := decodeError(t, readMsg(t, local)); e.Code != "08P01" || e.Routine != contract.Routine(contract.ReasonProtocol) {
		t.Fatalf("second SSLRequest: got %s %q (routine %q), want 08P01", e.Code, e.Message, e.Routine)
	}
}

// fanoutTunnel is a tunnel over two replicas: Dial reaches the first,
// DialEach both. Each replica's end of a stream arrives on its channel.
type fanoutTunnel struct {
	pipeTunnel
	replicas [2]chan net.Conn
}

func (f *fanoutTunnel) DialEach(context.Context) ([]net.Conn, error) {
	var out []net.Conn
	for _, r := range f.replicas {
		c, s := net.Pipe()
		r <- s
		out = append(out, c)
	}
	return out, nil
}

var _ tunnel.Fanout = (*fanoutTunnel)(nil)

// Through a tunnel that spreads over replicas, a CancelRequest reaches
// every replica (only one knows the key; the other drops it), and the
// local connection closes once both have closed their streams.
func TestCancelFansOut(t *testing.T) {
	tun := &fanoutTunnel{pipeTunnel: pipeTunnel{streams: make(chan net.Conn)}}
	for i := range tun.replicas {
		tun.replicas[i] = make(chan net.Conn, 1)
	}
	ln, _ := startProxy(t, client.Config{Target: iamTarget, Tunnel: tun})
	local := ln.dial(t)
	key := pgwire.CancelKey{PID: 9, Secret: "\x05\x06\x07\x08"}
	write(t, local, pgwire.AppendCancel(nil, key))
	var replicas []net.Conn
	for i, r := range tun.replicas {
		var s net.Conn
		select {
		case s = <-r:
		case <-time.After(20 * time.Second):
			t.Fatalf("replica %d got no stream", i)
		}
		s.SetDeadline(time.Now().Add(20 * time.Second))
		st := readStartup(t, s)
		if st.Kind != pgwire.KindCancel || st.Cancel != key {
			t.Fatalf("replica %d got %+v", i, st)
		}
		replicas = append(replicas, s)
	}
	closed := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := local.Read(b[:])
		closed <- err
	}()
	replicas[0].Close()              // replica 0 has no session with the key: it drops the cancel
	write(t, replicas[1], []byte{0}) // replica 1 cancels its query; the proxy still waits for it
	select {
	case err := <-closed:
		t.Fatalf("the local connection ended (%v) before every replica closed its stream", err)
	default:
	}
	replicas[1].Close()
	if err := <-closed; err == nil {
		t.Fatal("the local connection stayed open after the cancel")
	}
}

// A TLS-only connection to a server without a certificate fails with
// ErrServerWithoutTLS, which the CLI explains.
func TestDialServerWithoutTLS(t *testing.T) {
	tun := &pipeTunnel{streams: make(chan net.Conn, 1)}
	errc := make(chan error, 1)
	go func() {
		_, err := client.DialServer(t.Context(), tun, &tls.Config{ServerName: "rdsproxy"})
		errc <- err
	}()
	s := tun.next(t)
	if st := readStartup(t, s); st.Kind != pgwire.KindSSLRequest {
		t.Fatalf("server got %+v, want an SSLRequest", st)
	}
	write(t, s, []byte{'N'})
	if err := <-errc; !errors.Is(err, client.ErrServerWithoutTLS) {
		t.Fatalf("err = %v, want ErrServerWithoutTLS", err)
	}
}

// flakyListener fails Accept with EMFILE a number of times, as a process
// out of file descriptors does.
type flakyListener struct {
	*pipeListener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.pipeListener.Accept()
}

// Out of file descriptors, the local listener pauses and serves again,
// as the server's does, instead of ending `rdsproxy connect`.
func TestLocalListenerSurvivesEMFILE(t *testing.T) {
	p, err := client.New(client.Config{Target: passTarget, Tunnel: &pipeTunnel{streams: make(chan net.Conn)}, Tokens: &fixedTokens{}})
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{pipeListener: newPipeListener(), fails: 3}
	stop := serveOn(t, p, ln)
	local := ln.dial(t)
	write(t, local, pgwire.AppendSSLRequest(nil))
	if b := readByte(t, local); b != 'N' {
		t.Fatalf("SSLRequest answered %q after EMFILE", b)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// With LocalTLS, an SSLRequest inside TLS is refused with 08P01 inside
// TLS, as the server and PostgreSQL refuse it.
func TestLocalSSLRequestInsideTLSRefused(t *testing.T) {
	ca, err := sandbox.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := startProxy(t, client.Config{Target: passTarget, LocalTLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	local := ln.dial(t)
	write(t, local, pgwire.AppendSSLRequest(nil))
	if b := readByte(t, local); b != 'S' {
		t.Fatalf("SSLRequest answered %q", b)
	}
	tc := tls.Client(local, &tls.Config{ServerName: "localhost", RootCAs: ca.Pool()})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	write(t, tc, pgwire.AppendSSLRequest(nil))
	if e := decodeError(t, readMsg(t, tc)); e.Code != "08P01" || e.Routine != contract.Routine(contract.ReasonProtocol) {
		t.Fatalf("SSLRequest inside TLS: got %s %q, want 08P01", e.Code, e.Message)
	}
}

// Stopping `rdsproxy connect` (Ctrl-C) with connections open says how many
// it ended (the server cancels what they ran); a stop
// with none open says nothing.
func TestStopSaysWhatItClosed(t *testing.T) {
	for _, open := range []int{0, 2} {
		logs := &syncbuf.Buffer{}
		p, err := client.New(client.Config{Target: passTarget, Tunnel: &pipeTunnel{streams: make(chan net.Conn)},
			Tokens: &fixedTokens{}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ln := newPipeListener()
		stop := serveOn(t, p, ln)
		for range open {
			local := ln.dial(t)
			write(t, local, pgwire.AppendSSLRequest(nil))
			if b := readByte(t, local); b != 'N' { // being served
				t.Fatalf("SSLRequest answered %q", b)
			}
		}
		if err := stop(); err != nil {
			t.Fatalf("Serve: %v", err)
		}
		said := strings.Contains(logs.String(), fmt.Sprintf("stopped: ended open connections; the server cancels the statements they were running\" target=plain connections=%d", open))
		if said != (open > 0) || open == 0 && strings.Contains(logs.String(), "stopped") {
			t.Fatalf("%d open at the stop; logs:\n%s", open, logs.String())
		}
	}
}
