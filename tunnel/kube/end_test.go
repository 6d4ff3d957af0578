package kube_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
)

// endBound is how soon a reader must see the end of a stream the server
// closed. A kubelet that waits for both directions never ends it by itself,
// so the failure is an end that never comes: the bound is slack for a
// loaded machine.
const endBound = 10 * time.Second

// When the server closes first and the client never half-closes (a
// CancelRequest: PostgreSQL reads it and closes, libpq waits for that
// close), the reader sees EOF at once, even from a pod side that forwards
// until both directions end (ForwardGrace < 0), and further writes fail.
// On each transport, and with containerd's 1 s grace too.
func TestServerCloseEndsStream(t *testing.T) {
	for _, tt := range []struct {
		name     string
		refuseWS bool
		grace    time.Duration
	}{
		{"websocket", false, -1},
		{"spdy", true, -1},
		{"websocket containerd grace", false, kubeapi.DefaultForwardGrace},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := startCloser(t, 16)
			cluster := startCluster(t, target, func(c *kubeapi.Config) { c.ForwardGrace = tt.grace })
			cluster.RefuseWebsocket(tt.refuseWS)
			tun := newTunnel(t, baseConfig(t, cluster))
			c := dial(t, tun)
			if _, err := c.Write([]byte("16-byte request.")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c.SetReadDeadline(start.Add(3 * endBound))
			n, err := c.Read(make([]byte, 1))
			took := time.Since(start)
			t.Logf("read ended after %s: %d bytes, %v", took.Round(time.Millisecond), n, err)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read = %d, %v; want EOF once the server closed", n, err)
			}
			if took > endBound {
				t.Fatalf("EOF came %s after the server closed, want within %s", took, endBound)
			}
			if _, err := c.Write([]byte("more")); err == nil {
				t.Fatal("write after the server ended the stream succeeded")
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatalf("CloseWrite after the end: %v", err)
			}
		})
	}
}

// A port the pod does not serve fails the stream with the kubelet's
// "connection refused", naming the port, for readers and for writers that
// come after the end, and the tunnel stays usable.
func TestWrongPort(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	cfg := baseConfig(t, cluster)
	cfg.Port = serverPort + 1
	tun := newTunnel(t, cfg)
	c := dial(t, tun)
	c.SetDeadline(time.Now().Add(10 * endBound))
	c.Write([]byte("hello"))
	_, err := io.ReadAll(c)
	var se *kube.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("read error = %v, want a StreamError", err)
	}
	for _, want := range []string{"port 5433 of pod " + cluster.Pods()[0], "connection refused", "nothing listens on port 5433"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := c.Write([]byte("again")); !errors.As(err, &se) {
		t.Errorf("write after the refusal = %v, want the same StreamError", err)
	}
	if got := echo.accepted.Load(); got != 0 {
		t.Fatalf("the pod forwarded %d connections of a port it does not serve", got)
	}
	right := newTunnel(t, baseConfig(t, cluster))
	if err := ping(dial(t, right), "still served"); err != nil {
		t.Fatalf("the served port after a refused one: %v", err)
	}
}

// startCloser runs a server that reads n bytes from each connection and
// closes it without answering, as PostgreSQL treats a CancelRequest.
func startCloser(t *testing.T, n int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(time.Minute))
				io.ReadFull(c, make([]byte, n))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}
