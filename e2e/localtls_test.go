package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// A client proxy with LocalTLS: pgx verifying the local certificate
// (verify-full) connects over TLS; a client that sends garbage instead of
// a ClientHello after its SSLRequest is closed while the proxy keeps
// serving; a client that wants no TLS still connects in plaintext.
func TestClientLocalTLS(t *testing.T) {
	st := startStack(t)
	target, ok := st.snap.Lookup("app")
	if !ok {
		t.Fatal("no target app")
	}
	cert, err := sb.ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tun, err := tunnel.NewDirect(st.serverAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p, err := client.New(client.Config{Tunnel: tun, Target: *target, Tokens: sb.tokens,
		LocalTLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Logger: sb.logs.logger("client-tls")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); tun.Close() })
	addr := serve(t, &wg, func(ln net.Listener) error { return p.Serve(ctx, ln) })

	cfg := localConfig(t, addr, sandbox.UserIAM)
	cfg.TLSConfig = &tls.Config{RootCAs: sb.ca.Pool(), ServerName: "127.0.0.1"}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("verify-full through the local listener: %v", err)
	}
	defer conn.Close(ctx)
	if _, isTLS := conn.PgConn().Conn().(*tls.Conn); !isTLS {
		t.Error("the local hop is not TLS")
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != sandbox.UserIAM {
		t.Fatalf("query over local TLS: %q %v", user, err)
	}

	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(pgwire.AppendSSLRequest(nil))
	raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	var answer [1]byte
	if _, err := io.ReadFull(raw, answer[:]); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v; want S", answer, err)
	}
	garbage := make([]byte, 256)
	rand.Read(garbage)
	raw.Write(garbage)
	if _, err := io.ReadAll(raw); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a broken handshake was not closed: %v", err)
	}

	if err := connectLocal(t, addr, sandbox.UserIAM).Ping(ctx); err != nil {
		t.Fatalf("plaintext through a LocalTLS listener: %v", err)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("the TLS session broke: %v", err)
	}
}
