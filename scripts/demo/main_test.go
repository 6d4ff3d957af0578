package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// Without moto_server the demo reports why (it used to panic on a nil
// *World and hide the reason).
func TestDemoWithoutMoto(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := run(t.Context(), bin, &out)
	if err == nil || !strings.Contains(err.Error(), "moto_server") {
		t.Fatalf("demo without moto_server: %v, want an error naming moto_server; output:\n%s", err, out.String())
	}
}

// startDemo runs the demo with bin until ctx ends, and returns once it says
// the sandbox is up: its output, and where its error arrives when it ends.
func startDemo(t *testing.T, ctx context.Context, bin string) (*watchWriter, chan error) {
	t.Helper()
	out := &watchWriter{want: "Press Ctrl-C", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- run(ctx, bin, out) }()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("demo ended: %v\n%s", err, out.String())
	}
	return out, done
}

// The demo's walk-through works verbatim: the line it prints to source,
// then list, token, env and psql against the sandbox from another shell;
// a cancel (Ctrl-C) ends it cleanly and removes its directory.
func TestDemoWalkThrough(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rdsproxy/rdsproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(t.Context())
	out, done := startDemo(t, ctx, bin)
	source := regexp.MustCompile(`(?m)^    (source \S+/env\.sh)$`).FindStringSubmatch(out.String())
	if source == nil {
		t.Fatalf("no line to source:\n%s", out.String())
	}
	script := source[1] + `
set -e
rdsproxy list | grep -q '^orders '
rdsproxy token orders | grep -q 'X-Amz-Signature='
eval "$(rdsproxy env orders)"
psql -X -At -c 'SELECT current_user'`
	shell := exec.Command("bash", "-c", script)
	shell.Env = append(os.Environ(), "AWS_PROFILE=someone-elses", "RDSPROXY_VIA=kube") // env.sh must clear these
	got, err := shell.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(got)), sandbox.UserIAM) {
		t.Errorf("walk-through: %v\n%s", err, got)
	}
	// The printed superuser line reaches the sandbox's PostgreSQL itself.
	direct := regexp.MustCompile(`(?m)^    psql "(host=\S+ [^"]*)"$`).FindStringSubmatch(out.String())
	if direct == nil {
		t.Errorf("no line to reach PostgreSQL directly:\n%s", out.String())
	} else if got, err := exec.Command("psql", "-X", "-At", direct[1], "-c", "SELECT current_user").CombinedOutput(); err != nil || strings.TrimSpace(string(got)) != "postgres" {
		t.Errorf("psql %q: %v\n%s", direct[1], err, got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo after cancel: %v", err)
	}
	dir := filepath.Dir(strings.TrimPrefix(source[1], "source "))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo directory %s left behind: %v", dir, err)
	}
}

// watchWriter collects output and closes seen once it contains want.
type watchWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
