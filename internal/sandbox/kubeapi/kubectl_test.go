package kubeapi_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
)

// The installed kubectl port-forwards through the fake API server to an
// echo server, over websocket and, with websocket refused, over SPDY.
func TestKubectlPortForward(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; this test checks the fake against it")
	}
	for _, tt := range []struct {
		name     string
		refuseWS bool
		want     string
	}{
		{"websocket", false, "websocket"},
		{"spdy fallback", true, "spdy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			echo := startEcho(t)
			s, err := kubeapi.Start(kubeapi.Config{Target: echo, Port: 5432, Namespace: "db"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			s.RefuseWebsocket(tt.refuseWS)
			addr, _ := runKubectlPortForward(t, kubectl, s, 5432)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := bytes.Repeat([]byte("kubectl through the fake "), 4096)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo through kubectl: got %d bytes, want %d identical", len(got), len(msg))
			}
			if up := s.Upgrades(); up[tt.want] != 1 {
				t.Fatalf("upgrades = %v, want one %s", up, tt.want)
			}
		})
	}
}

// runKubectlPortForward starts `kubectl port-forward deploy/NAME :PORT`
// with a kubeconfig for s in a temporary HOME, waits for its "Forwarding
// from" line and returns the local address and kubectl's stderr. The
// process is interrupted at cleanup.
func runKubectlPortForward(t *testing.T, kubectl string, s *kubeapi.Server, port int) (string, *lineWatcher) {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := s.WriteKubeconfig(kc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kc, "--cache-dir", filepath.Join(dir, "cache"),
		"port-forward", "--address", "127.0.0.1", "deploy/"+s.Deployment(), ":"+strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "HOME="+dir, "KUBECONFIG=")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	out := newLineWatcher(regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> ` + strconv.Itoa(port)))
	stderr := newLineWatcher(regexp.MustCompile(`(error forwarding port.*)`))
	cmd.Stdout, cmd.Stderr = out, stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		t.Logf("kubectl stdout:\n%s\nstderr:\n%s", out.text(), stderr.text())
	})
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-out.found:
		return out.match(), stderr
	case err := <-exited:
		exited <- err
		t.Fatalf("kubectl exited before forwarding: %v", err)
	case <-timer.C:
		t.Fatal("kubectl did not start forwarding within 30s")
	}
	return "", nil
}

// lineWatcher collects output and signals the first match of re.
type lineWatcher struct {
	re    *regexp.Regexp
	found chan struct{}

	mu  sync.Mutex
	buf bytes.Buffer
	hit string
}

func newLineWatcher(re *regexp.Regexp) *lineWatcher {
	return &lineWatcher{re: re, found: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.hit == "" {
		if m := w.re.FindSubmatch(w.buf.Bytes()); m != nil {
			w.hit = string(m[1])
			close(w.found)
		}
	}
	return len(p), nil
}

func (w *lineWatcher) match() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hit
}

func (w *lineWatcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startEcho runs a loopback echo server for the test's lifetime.
func startEcho(t *testing.T) string {
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
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// `kubectl get pods --watch -o name` against the fake through a rollout:
// kubectl lists, then watches from the list's resourceVersion, so it must
// see each change once and nothing it already listed again.
func TestKubectlWatchPods(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; this test checks the fake against it")
	}
	s, err := kubeapi.Start(kubeapi.Config{Target: "127.0.0.1:1", Namespace: "db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	first := s.Pods()[0]
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := s.WriteKubeconfig(kc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kc, "--cache-dir", filepath.Join(dir, "cache"),
		"get", "pods", "--watch", "-o", "name")
	cmd.Env = append(os.Environ(), "HOME="+dir, "KUBECONFIG=")
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- strings.Join(strings.Fields(sc.Text()), " ")
		}
	}()
	t.Cleanup(func() { cancel(); cmd.Wait(); t.Logf("kubectl stderr:\n%s", stderr.String()) })
	next := func(want string) {
		t.Helper()
		select {
		case got, ok := <-lines:
			if !ok || got != want {
				t.Fatalf("kubectl printed %q (open %v), want %q", got, ok, want)
			}
		case <-time.After(30 * time.Second): // hang guard
			t.Fatalf("kubectl printed nothing; want %q", want)
		}
	}
	// The list, then one line per change: the added pod, the old one
	// terminating, the old one deleted. A watch that repeated the listed
	// pod would print it again before the added one.
	next("pod/" + first)
	second := s.AddPod("127.0.0.1:2")
	next("pod/" + second)
	s.Terminate(first)
	next("pod/" + first)
	s.Remove(first)
	next("pod/" + first)
}
