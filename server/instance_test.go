package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/server"
)

// runInstance runs an Instance of w (logging to log, which may be nil)
// on two loopback listeners. stop ends it and returns Run's error.
func runInstance(t *testing.T, w *discovery.Watcher, log *slog.Logger) (ln, admin net.Listener, stop func() error) {
	t.Helper()
	reg, metrics := server.NewRegistry(w.Status)
	roots, err := server.RootCAs(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Targets: w, RootCAs: roots, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ln, admin = listen(), listen()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- server.Instance{Server: srv, Watcher: w, Listener: ln, Admin: admin, Metrics: reg, Logger: log}.Run(ctx)
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute): // hang guard
			return errors.New("Run did not return after its context ended")
		}
	})
	t.Cleanup(func() { stop() })
	return ln, admin, stop
}

// get fetches path from the admin listener.
func get(t *testing.T, admin net.Listener, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// An Instance loads a snapshot, answers /readyz and /metrics (with
// discovery's gauges), and when its context ends returns with both
// listeners closed.
func TestInstanceRun(t *testing.T) {
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Policy: discovery.Policy{Static: []discovery.Target{
		discovery.Static(discovery.Target{Name: "app", Endpoint: "app.example:5432", Region: "eu-west-1"})}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, admin, stop := runInstance(t, w, nil)
	// Run refreshes before it serves, so the first answer is already ready.
	if code, body := get(t, admin, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if _, body := get(t, admin, "/metrics"); !strings.Contains(body, "rdsproxy_discovery_targets 1\n") {
		t.Fatalf("/metrics lacks rdsproxy_discovery_targets 1:\n%s", body)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Closing again says whether Run closed them. (Dialling the port
	// instead failed once in CI: a port freed on loopback can be taken
	// at once by another process's listener.)
	for _, l := range []net.Listener{ln, admin} {
		if err := l.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s was still open after Run returned (closing it: %v)", l.Addr(), err)
		}
	}
}

// When the first refresh fails (here: no credentials), the log
// says the server is not ready and what to check, never "ready"; /readyz
// answers 503.
func TestInstanceNotReadyWithoutSnapshot(t *testing.T) {
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Policy: discovery.Policy{Regions: []string{"eu-west-1"}}, Logger: log,
		Fetch: func(context.Context) ([]discovery.Database, error) {
			return nil, errors.New("operation error RDS: DescribeDBInstances, get identity: no EC2 IMDS role found")
		}})
	if err != nil {
		t.Fatal(err)
	}
	_, admin, _ := runInstance(t, w, log)
	waitForLog := func(want string) {
		t.Helper()
		for range 100 {
			if strings.Contains(logs.String(), want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("log lacks %q:\n%s", want, logs.String())
	}
	waitForLog(`level=WARN msg="serving, but not ready: discovery has no target list yet`)
	waitForLog(`the server got no AWS credentials: check its instance role`)
	if strings.Contains(logs.String(), "msg=ready") || strings.Contains(logs.String(), "serving the last snapshot") {
		t.Errorf("log claims readiness or a snapshot:\n%s", logs.String())
	}
	if code, _ := get(t, admin, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", code)
	}
}

// Stopped during its first refresh (SIGTERM while the RDS API is slow),
// the server says only that it stopped: nothing failed, so no warning
// points at a refresh error that was never logged.
func TestInstanceStoppedDuringFirstRefresh(t *testing.T) {
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Policy: discovery.Policy{Regions: []string{"eu-west-1"}}, Logger: log,
		Fetch: func(ctx context.Context) ([]discovery.Database, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, stop := runInstance(t, w, log)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := logs.String(); !strings.Contains(got, "msg=stopped") || strings.Contains(got, "level=WARN") {
		t.Errorf("stopped during the first refresh, want only the stopped line:\n%s", got)
	}
}
