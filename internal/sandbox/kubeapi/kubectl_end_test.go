package kubeapi_test

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
)

// endBound is how soon a forwarded connection the pod side closed must
// end for the client. The failure is an end that never comes, so the bound
// is slack for a loaded machine.
const endBound = 10 * time.Second

// The fake ends a forwarded connection as a kubelet does, and kubectl (the
// reference client) sees the end at once: when the pod side closes first
// and the local client never half-closes (a PostgreSQL CancelRequest), the
// local connection reads EOF well within endBound, even with the strictest
// pod side, one that forwards until both directions end.
func TestKubectlServerClosesFirst(t *testing.T) {
	kubectl := lookKubectl(t)
	for _, tt := range []struct {
		name     string
		refuseWS bool
		grace    time.Duration
	}{
		{"websocket strict", false, -1},
		{"spdy strict", true, -1},
		{"websocket containerd grace", false, kubeapi.DefaultForwardGrace},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := kubeapi.Start(kubeapi.Config{Target: startCloser(t, 16), Namespace: "db", ForwardGrace: tt.grace})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			s.RefuseWebsocket(tt.refuseWS)
			addr, _ := runKubectlPortForward(t, kubectl, s, kubeapi.DefaultPort)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("16-byte request.")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c.SetReadDeadline(start.Add(3 * endBound))
			n, err := c.Read(make([]byte, 1))
			took := time.Since(start)
			t.Logf("kubectl's local connection ended %s after the write: %d bytes, %v", took.Round(time.Millisecond), n, err)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read = %d, %v; want EOF", n, err)
			}
			if took > endBound {
				t.Fatalf("EOF came after %s, want within %s", took, endBound)
			}
		})
	}
}

// A port the pod does not serve fails like a kubelet's: kubectl reports
// the kubelet's "error forwarding port ... connection refused" message.
func TestKubectlWrongPort(t *testing.T) {
	kubectl := lookKubectl(t)
	s, err := kubeapi.Start(kubeapi.Config{Target: startEcho(t), Namespace: "db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	addr, stderr := runKubectlPortForward(t, kubectl, s, kubeapi.DefaultPort+1)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("hello"))
	io.Copy(io.Discard, c) // kubectl closes the local connection
	select {
	case <-stderr.found:
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl reported no forwarding error:\n%s", stderr.text())
	}
	msg := stderr.match()
	for _, want := range []string{"error forwarding port 5481 to pod " + s.Pods()[0], "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("kubectl's error %q does not say %q", msg, want)
		}
	}
}

func lookKubectl(t *testing.T) string {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; this test checks the fake against it")
	}
	return kubectl
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
