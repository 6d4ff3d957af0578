package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// With --tls-cert on the server and --server-ca on the client, the tunnel
// hop is TLS (verify-full): sessions and the target list work over it, and
// a client that does not trust the certificate fails with a clear error.
func TestServerHopTLS(t *testing.T) {
	cert, err := sb.ca.Issue("rdsproxy.sandbox.internal")
	if err != nil {
		t.Fatal(err)
	}
	st := startStack(t, func(c *server.Config) {
		c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	tun, err := tunnel.NewDirect(st.serverAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	trusted := &tls.Config{RootCAs: sb.ca.Pool(), ServerName: "rdsproxy.sandbox.internal", MinVersion: tls.VersionTLS12}
	list, err := client.FetchTargetList(context.Background(), tun, trusted, nil)
	if err != nil || len(list.Targets) != st.snap.Len() {
		t.Fatalf("target list over TLS: %d targets, %v", len(list.Targets), err)
	}
	addr := serveClient(t, tun, "app", trusted)
	conn := connectLocal(t, addr, sandbox.UserIAM)
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("session over the TLS hop: %v", err)
	}
	untrusted := &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "rdsproxy.sandbox.internal", MinVersion: tls.VersionTLS12}
	if _, err := client.FetchTargetList(context.Background(), tun, untrusted, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server certificate: %v", err)
	}
}

// serveClient runs one client proxy for target with the given server TLS.
func serveClient(t *testing.T, tun tunnel.Tunnel, target string, serverTLS *tls.Config) string {
	t.Helper()
	var tgt = sb.targets[0]
	for _, x := range sb.targets {
		if x.Name == target {
			tgt = x
		}
	}
	p, err := client.New(client.Config{Tunnel: tun, Target: tgt, Tokens: sb.tokens, ServerTLS: serverTLS, Logger: sb.logs.logger("client")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	return serve(t, &wg, func(ln net.Listener) error { return p.Serve(ctx, ln) })
}
