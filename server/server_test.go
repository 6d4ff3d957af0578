package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// flakyListener fails Accept with EMFILE a number of times, as a process
// out of file descriptors does, then accepts normally.
type flakyListener struct {
	net.Listener
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
	return l.Listener.Accept()
}

// Out of descriptors, the accept loop backs off, logs at most once per
// second, and serves again once accepting works.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner, fails: 8} // 5+10+…+640 ms of back-off
	logs := &syncbuf.Buffer{}
	snap, _ := discovery.NewSnapshot(nil, time.Now())
	roots, _ := RootCAs(nil)
	srv, err := New(Config{Targets: fixed{snap}, RootCAs: roots, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- srv.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + inner.Addr().String() + "/v1/targets")
	if err != nil {
		t.Fatalf("no recovery after EMFILE: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(logs.String(), "accept failed; backing off")
	if lines < 1 || lines > int(elapsed/time.Second)+1 {
		t.Fatalf("%d back-off log lines in %v; want at least one and at most one per second:\n%s", lines, elapsed, logs.String())
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s after recovery", resp.Status)
	}
}

type fixed struct{ snap *discovery.Snapshot }

func (f fixed) Current() *discovery.Snapshot { return f.snap }
