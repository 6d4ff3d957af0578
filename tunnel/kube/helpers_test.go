package kube_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
)

// serverPort is the container port the tests forward to; the fake
// cluster's pods serve it and forward it to their target address.
const serverPort = 5432

// echoServer stands in for the rdsproxy server: it echoes every byte and
// half-closes after the client does.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: map[net.Conn]struct{}{}}
	e.wg.Go(e.serve)
	t.Cleanup(e.close)
	return e
}

func (e *echoServer) Addr() string { return e.ln.Addr().String() }

func (e *echoServer) serve() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.accepted.Add(1)
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Go(func() {
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			io.Copy(c, c)
			c.(*net.TCPConn).CloseWrite()
		})
	}
}

func (e *echoServer) close() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// startCluster runs the fake API server with one pod forwarding serverPort
// to target; opts adjust its configuration.
func startCluster(t *testing.T, target string, opts ...func(*kubeapi.Config)) *kubeapi.Server {
	t.Helper()
	cfg := kubeapi.Config{Target: target, Port: serverPort, Namespace: "db", Deployment: "rdsproxy", Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := kubeapi.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func baseConfig(t *testing.T, s *kubeapi.Server) kube.Config {
	return kube.Config{
		RESTConfig:  s.RESTConfig(s.Token()),
		Namespace:   s.Namespace(),
		Deployment:  s.Deployment(),
		Port:        serverPort,
		DialTimeout: 10 * time.Second,
		Logger:      testLogger(t),
	}
}

func newTunnel(t *testing.T, cfg kube.Config) *kube.Tunnel {
	t.Helper()
	tun, err := kube.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

func dial(t *testing.T, tun *kube.Tunnel) net.Conn {
	t.Helper()
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// transfer sends size pseudo-random bytes, half-closes, reads the echo to
// EOF and compares SHA-256 sums of what went out and what came back.
func transfer(c net.Conn, size int, seed uint64) error {
	payload := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	rng.Read(payload)
	want := sha256.Sum256(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, rerr := io.Copy(h, c)
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("read after %d bytes: %w", n, rerr)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) || n != int64(size) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with a different checksum", size, n)
	}
	return nil
}

// ping writes a short message and reads its echo, leaving the stream open.
func ping(c net.Conn, msg string) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// blackhole accepts TCP connections and never answers: an API server
// that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
