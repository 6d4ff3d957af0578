package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/server"
)

// countingListener counts the connections the server has accepted and not
// yet closed, and the most it ever held at once.
type countingListener struct {
	net.Listener
	open, max atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for m := l.max.Load(); n > m && !l.max.CompareAndSwap(m, n); m = l.max.Load() {
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// startAdmin serves the admin endpoints on a loopback port with cfg;
// the test's end stops it and waits for ServeAdmin to return.
func startAdmin(t *testing.T, cfg server.AdminConfig) (string, *countingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.ServeAdmin(ctx, cl, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeAdmin: %v", err)
		}
	})
	return ln.Addr().String(), cl
}

// keepAliveClient is one raw HTTP/1.1 connection that sends GET /healthz,
// reads the answer and then stays idle until the server closes it.
type keepAliveClient struct {
	sent   time.Time // just before the request was written
	closed time.Time // when the server's close arrived
	err    error
}

func (k *keepAliveClient) run(addr string, bound time.Duration) {
	c, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		k.err = err
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	k.sent = time.Now()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
		k.err = err
		return
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		k.err = fmt.Errorf("no answer: %w", err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		k.err = fmt.Errorf("GET /healthz: %s", resp.Status)
		return
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		k.err = fmt.Errorf("idle connection: want the server's close, got %v", err)
		return
	}
	k.closed = time.Now()
}

// More idle keep-alive connections than the cap: the server never holds
// more than the cap; the others wait in the backlog and are served as the
// idle timeout closes the first ones; in the end every connection was
// answered, every idle one was closed by the server no sooner than the
// idle timeout, none is left open, and /healthz answers a newcomer.
func TestAdminConnectionCap(t *testing.T) {
	const maxConns, clients = 4, 12
	const idle = 500 * time.Millisecond
	const bound = 30 * time.Second
	addr, cl := startAdmin(t, server.AdminConfig{MaxConns: maxConns, IdleTimeout: idle})

	first := make([]keepAliveClient, maxConns)
	var wg sync.WaitGroup
	for i := range first {
		wg.Go(func() { first[i].run(addr, bound) })
	}
	poll(t, bound, "the first connections to be held", func() bool { return cl.open.Load() == maxConns })
	rest := make([]keepAliveClient, clients-maxConns)
	for i := range rest {
		wg.Go(func() { rest[i].run(addr, bound) })
	}
	wg.Wait()

	for i, k := range append(first, rest...) {
		if k.err != nil {
			t.Errorf("client %d: %v", i, k.err)
			continue
		}
		// From the request, not the answer: the server's idle timer starts
		// after its answer, so this holds however late the client reads it.
		// The first maxConns clients are the ones that check the timeout:
		// the others' time includes their wait in the backlog.
		if held := k.closed.Sub(k.sent); held < idle {
			t.Errorf("client %d: closed %s after its request, before the %s idle timeout", i, held, idle)
		}
	}
	if m := cl.max.Load(); m != maxConns {
		t.Errorf("the server held at most %d connections at once, want the cap %d", m, maxConns)
	}
	poll(t, bound, "every connection to be closed", func() bool { return cl.open.Load() == 0 })
	hc := &http.Client{Timeout: bound}
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz after the others closed: %v", err)
	}
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz after the others closed: %s", resp.Status)
	}
}

// A client that never finishes its headers is cut at ReadHeaderTimeout,
// and headers beyond MaxHeaderBytes get 431.
func TestAdminSlowAndLargeRequests(t *testing.T) {
	const bound = 30 * time.Second
	addr, cl := startAdmin(t, server.AdminConfig{ReadHeaderTimeout: 2 * time.Second, MaxHeaderBytes: 1 << 10})

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.SetDeadline(time.Now().Add(bound))
	start := time.Now()
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: adm")
	b, _ := io.ReadAll(slow) // the server may answer 408 before closing
	if time.Since(start) >= bound {
		t.Fatal("a request with unfinished headers was never cut")
	}
	if len(b) > 0 && !strings.Contains(string(b), " 408 ") {
		t.Fatalf("unfinished headers got %q", b)
	}

	big, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	big.SetDeadline(time.Now().Add(bound))
	io.WriteString(big, "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Pad: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(big), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers: %s, want 431", resp.Status)
	}
	big.Close()
	poll(t, bound, "both connections to be closed by the server", func() bool { return cl.open.Load() == 0 })
}

// /healthz always answers, /readyz follows Ready, /metrics serves the
// gatherer; other methods and paths are refused.
func TestAdminEndpoints(t *testing.T) {
	var ready atomic.Bool
	reg := prometheus.NewRegistry()
	probes := prometheus.NewCounter(prometheus.CounterOpts{Name: "rdsproxy_test_probes_total", Help: "test"})
	reg.MustRegister(probes)
	probes.Add(3)
	addr, _ := startAdmin(t, server.AdminConfig{Ready: ready.Load, Metrics: reg})
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	get := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tt := range []struct {
		name, method, path string
		setReady           bool
		code               int
		body               string
	}{
		{"healthz", "GET", "/healthz", false, 200, "ok\n"},
		{"not ready", "GET", "/readyz", false, 503, "not ready\n"},
		{"ready", "GET", "/readyz", true, 200, "ready\n"},
		{"metrics", "GET", "/metrics", true, 200, "rdsproxy_test_probes_total 3\n"},
		{"post", "POST", "/healthz", true, 405, ""},
		{"unknown path", "GET", "/debug/pprof/", true, 404, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.setReady)
			code, body := get(tt.method, tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, code, body, tt.code, tt.body)
			}
		})
	}
}

func TestAdminConfigValidate(t *testing.T) {
	ok := server.AdminConfig{Ready: func() bool { return true }, Metrics: prometheus.NewRegistry()}
	for _, tt := range []struct {
		name string
		edit func(*server.AdminConfig)
		want string
	}{
		{"defaults", func(*server.AdminConfig) {}, ""},
		{"no ready", func(c *server.AdminConfig) { c.Ready = nil }, "readiness"},
		{"no metrics", func(c *server.AdminConfig) { c.Metrics = nil }, "metrics"},
		{"negative cap", func(c *server.AdminConfig) { c.MaxConns = -1 }, "max connections"},
		{"negative idle", func(c *server.AdminConfig) { c.IdleTimeout = -time.Second }, "Admin.IdleTimeout: timeout -1s is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// poll checks cond until it holds, failing after bound.
func poll(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", bound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
