package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// When the server the demo started dies (here: SIGKILL), the demo says so
// with the exit status, keeps the server's log, stops everything, removes
// its directory and ends with an error; it used to go on showing "the
// sandbox is up" with nothing behind it.
func TestDemoEndsWhenServerExits(t *testing.T) {
	real := filepath.Join(t.TempDir(), "rdsproxy")
	if out, err := exec.Command("go", "build", "-o", real, "github.com/rdsproxy/rdsproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// A wrapper that records the server's pid and execs the real binary
	// (same pid), so the test kills exactly the server the demo started.
	pidFile := filepath.Join(t.TempDir(), "server.pid")
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	wrapper := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = server ]; then echo $$ > %s; fi\nexec %s \"$@\"\n", shellQuote(pidFile), shellQuote(real))
	if err := os.WriteFile(bin, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out, done := startDemo(t, ctx, bin)
	source := regexp.MustCompile(`(?m)^    source (\S+)/env\.sh$`).FindStringSubmatch(out.String())
	if source == nil {
		t.Fatalf("no line to source:\n%s", out.String())
	}
	dir := source[1]
	t.Cleanup(func() { os.Remove(dir + "-server.log") })
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the server: %v", err)
	}
	// Stop a demo that does not notice, so the test fails instead of hanging.
	stopLater := time.AfterFunc(30*time.Second, cancel)
	defer stopLater.Stop()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "server exited: signal: killed") {
		t.Fatalf("demo after its server was killed: %v, want an error with the exit status; output:\n%s", err, out.String())
	}
	for _, want := range []string{"rdsproxy server exited (signal: killed)", "Its log is kept: " + dir + "-server.log", "now fail"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if log, err := os.ReadFile(dir + "-server.log"); err != nil || len(log) == 0 {
		t.Errorf("server log not kept: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo directory %s left behind: %v", dir, err)
	}
}
