package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/server"
)

// An Instance loads a snapshot, answers /readyz and /metrics (with
// discovery's gauges), and when its context ends returns with both
// listeners closed.
func TestInstanceRun(t *testing.T) {
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Policy: discovery.Policy{Static: []discovery.Target{
		discovery.Static(discovery.Target{Name: "app", Endpoint: "app.example:5432", Region: "eu-west-1"})}}})
	if err != nil {
		t.Fatal(err)
	}
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
	ln, admin := listen(), listen()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- server.Instance{Server: srv, Watcher: w, Listener: ln, Admin: admin, Metrics: reg}.Run(ctx)
	}()
	get := func(path string) (int, string) {
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
	// Run refreshes before it serves, so the first answer is already ready.
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "rdsproxy_discovery_targets 1\n") {
		t.Fatalf("/metrics lacks rdsproxy_discovery_targets 1:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(time.Minute): // hang guard
		t.Fatal("Run did not return after its context ended")
	}
	for _, l := range []net.Listener{ln, admin} {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Run returned", l.Addr())
		}
	}
}
