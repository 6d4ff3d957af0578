package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// When the tunnel to the server drops (here: the link resets) while a
// query runs, the session through connect hears why, 08006 naming the lost
// server connection, instead of "server closed the connection
// unexpectedly"; a new session works through a new tunnel connection.
func TestTunnelLossSaysWhy(t *testing.T) {
	path := &link{}
	st := startStackVia(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, err := tunnel.NewDirect(path.start(t, serverAddr), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return tun
	})
	ctx := context.Background()
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	const sleep = "SELECT pg_sleep(5) -- lost"
	ran := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, sleep); ran <- err }()
	waitFor(t, 30*time.Second, "the query to run", func() bool { return running(t, sleep) })
	path.reset()
	pgErr(t, <-ran, "08006", "rdsproxy: lost the connection to the rdsproxy server")
	again := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if _, err := again.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a new session after the reset: %v", err)
	}
}
