package main

import (
	"context"
	"fmt"
	"net"
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

// When the server or the connect the demo started dies (here: SIGKILL),
// the demo says so with the exit status and what that breaks, keeps the
// process's log, stops everything, removes its directory and ends with an
// error; it used to go on showing "the sandbox is up" with nothing behind
// it.
func TestDemoEndsWhenItsProcessExits(t *testing.T) {
	real := filepath.Join(t.TempDir(), "rdsproxy")
	if out, err := exec.Command("go", "build", "-o", real, "github.com/rdsproxy/rdsproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, tt := range []struct{ name, lost string }{
		{"server", "through the server and now fail."},
		{"connect", "through the demo's connect, now fails"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A wrapper that records the process's pid and execs the real
			// binary (same pid), so the test kills exactly the process the
			// demo started.
			pidFile := filepath.Join(t.TempDir(), tt.name+".pid")
			bin := filepath.Join(t.TempDir(), "rdsproxy")
			wrapper := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = %s ]; then echo $$ > %s; fi\nexec %s \"$@\"\n", tt.name, shellQuote(pidFile), shellQuote(real))
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
			kept := dir + "-" + tt.name + ".log"
			t.Cleanup(func() { os.Remove(kept) })
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill the %s: %v", tt.name, err)
			}
			// Stop a demo that does not notice, so the test fails instead of hanging.
			stopLater := time.AfterFunc(30*time.Second, cancel)
			defer stopLater.Stop()
			err = <-done
			if want := tt.name + " exited: signal: killed"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("demo after its %s was killed: %v, want an error with %q; output:\n%s", tt.name, err, want, out.String())
			}
			for _, want := range []string{"rdsproxy " + tt.name + " exited (signal: killed)", "Its log is kept: " + kept, tt.lost} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if log, err := os.ReadFile(kept); err != nil || len(log) == 0 {
				t.Errorf("%s log not kept: %v", tt.name, err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("demo directory %s left behind: %v", dir, err)
			}
		})
	}
}

// A server that exits before it is ready ends the wait for its readiness
// with that news, not a minute later with a connection error.
func TestWaitReadyNoticesExit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/readyz"
	ln.Close() // nothing answers there
	exited := make(chan struct{})
	close(exited)
	if err := waitReady(t.Context(), url, exited); err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("waitReady: %v, want the process's exit", err)
	}
}
