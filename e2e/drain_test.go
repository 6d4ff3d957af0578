package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// The drain lets running sessions finish whatever carries them: over a
// TLS hop (the server tracks the accepted socket, not the TLS connection
// over it) and striped over SSM sessions (every stripe, not only the
// first). A session that finishes within the drain time ends normally;
// one that does not gets 57P01, written through the same hop, also in the
// middle of a COPY out.
func TestDrainLetsSessionsFinish(t *testing.T) {
	cert, err := sb.ca.Issue("rdsproxy.sandbox.internal")
	if err != nil {
		t.Fatal(err)
	}
	hops := []struct {
		name      string
		serverTLS *tls.Config
		clientTLS *tls.Config
		tunnel    func(t *testing.T, addr string) tunnel.Tunnel
		striping  bool
	}{
		{name: "TLS hop",
			serverTLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			clientTLS: &tls.Config{RootCAs: sb.ca.Pool(), ServerName: "rdsproxy.sandbox.internal", MinVersion: tls.VersionTLS12},
			tunnel: func(t *testing.T, addr string) tunnel.Tunnel {
				tun, err := tunnel.NewDirect(addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				return tun
			}},
		{name: "striped over SSM", striping: true,
			tunnel: func(t *testing.T, addr string) tunnel.Tunnel {
				tun, _ := stripedSSM(t, addr, 3)
				return tun
			}},
	}
	for _, hop := range hops {
		t.Run(hop.name, func(t *testing.T) {
			stop, addr := startDrainableServer(t, hop.serverTLS)
			tun := hop.tunnel(t, addr)
			t.Cleanup(func() { tun.Close() })
			local := serveProxy(t, client.Config{Tunnel: tun, Target: targetNamed(t, "app"), Tokens: sb.tokens,
				ServerTLS: hop.clientTLS, Striping: hop.striping, Logger: sb.logs.logger("client")})
			short := connectLocal(t, local, sandbox.UserIAM)
			long := connectLocal(t, local, sandbox.UserIAM)
			copying := connectLocal(t, local, sandbox.UserIAM)
			// A failed test ends its statements before their connections close.
			ctx, cancel := context.WithCancel(context.Background())
			var running sync.WaitGroup
			t.Cleanup(func() { cancel(); running.Wait() })
			shortDone, copyDone := make(chan error, 1), make(chan error, 1)
			const shortStmt = "SELECT pg_sleep(1.5) /* drain */"
			running.Go(func() {
				_, err := short.Exec(ctx, shortStmt)
				shortDone <- err
			})
			// Rows streaming at the drain deadline, PostgreSQL's 8 KiB flushes
			// cutting them anywhere: 30 s of them, far past the drain.
			const copyStmt = "COPY (SELECT i, repeat('x', 100), CASE WHEN i % 100 = 0 THEN pg_sleep(0.01) END FROM generate_series(1, 300000) i) TO STDOUT"
			running.Go(func() {
				_, err := copying.PgConn().CopyTo(ctx, io.Discard, copyStmt)
				copyDone <- err
			})
			waitFor(t, 30*time.Second, "the short query and the COPY running", func() bool {
				return statementRunning(t, shortStmt) && statementRunning(t, copyStmt)
			})
			stop()
			if err := <-shortDone; err != nil {
				t.Fatalf("a session finishing within the drain time failed: %v", err)
			}
			const longStmt = "SET client_connection_check_interval = 0; SELECT pg_sleep(30)"
			_, err := long.Exec(ctx, longStmt)
			pgErr(t, err, "57P01", "server is shutting down")
			// ...and its statement is cancelled, not left running: PostgreSQL
			// does not look for the closed socket here (the check interval is 0).
			waitFor(t, 10*time.Second, "the drained session's statement cancelled", func() bool { return !statementRunning(t, longStmt) })
			pgErr(t, <-copyDone, "57P01", "server is shutting down") // the row it was in finished first
		})
	}
}

// startDrainableServer serves the sandbox's targets with a 6 s drain (a
// 1.5 s query running when it begins finishes within it, however loaded the
// machine); stop begins the drain.
func startDrainableServer(t *testing.T, clientTLS *tls.Config) (stop func(), addr string) {
	t.Helper()
	snap, err := discovery.NewSnapshot(sb.targets, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := server.RootCAs(sb.ca.PEM())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Targets: fixedTargets{snap}, DialOverrides: sb.dials, RootCAs: roots,
		ClientTLS: clientTLS, DrainTimeout: 6 * time.Second, Logger: sb.logs.logger("server")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cancel, ln.Addr().String()
}

// serveProxy runs one client proxy until the test ends.
func serveProxy(t *testing.T, cfg client.Config) string {
	t.Helper()
	p, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func targetNamed(t *testing.T, name string) discovery.Target {
	t.Helper()
	for _, x := range sb.targets {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("no sandbox target %q", name)
	return discovery.Target{}
}
