package e2e

import (
	"context"
	"io"
	"net"
	"sync"
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
	link := &resettableLink{}
	st := startStackVia(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, err := tunnel.NewDirect(link.start(t, serverAddr), 5*time.Second)
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
	link.reset()
	pgErr(t, <-ran, "08006", "rdsproxy: lost the connection to the rdsproxy server")
	again := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if _, err := again.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a new session after the reset: %v", err)
	}
}

// resettableLink forwards TCP connections to an address and can reset
// every connection it carries, as a dropped network path does.
type resettableLink struct {
	mu    sync.Mutex
	conns []*net.TCPConn
}

// start listens on loopback, forwarding to target, until the test ends.
func (l *resettableLink) start(t testing.TB, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); l.reset(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c.(*net.TCPConn), up.(*net.TCPConn))
			l.mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	return ln.Addr().String()
}

// reset closes every connection with a reset.
func (l *resettableLink) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.SetLinger(0)
		c.Close()
	}
	l.conns = nil
}
