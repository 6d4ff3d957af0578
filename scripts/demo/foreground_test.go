//go:build linux || darwin

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// childEnv makes the test binary act as a demo that serves until Ctrl-C.
const childEnv = "DEMO_TEST_FOREGROUND_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(interruptible(func(ctx context.Context) error {
			fmt.Println("serving")
			<-ctx.Done()
			return ctx.Err()
		}))
	}
	if os.Getenv(failingChildEnv) == "1" {
		os.Exit(interruptible(func(context.Context) error { return errors.New("the server exited") }))
	}
	os.Exit(m.Run())
}

// failingChildEnv makes the test binary act as a demo that fails at once.
const failingChildEnv = "DEMO_TEST_FAILING_CHILD"

// A demo that fails (its server or connect died, bin/rdsproxy is missing)
// says why and exits 1, so that make and scripts notice; it used to print
// "stopped" and exit 0.
func TestFailureExitsNonZero(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), failingChildEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1; stdout %q", err, stdout.String())
	}
	if !strings.Contains(stderr.String(), "demo: the server exited") || strings.Contains(stdout.String(), "stopped") {
		t.Errorf("stdout %q, stderr %q: want the error, not \"stopped\"", stdout.String(), stderr.String())
	}
}

// `make demo` on a terminal, then Ctrl-C: the demo stops and make exits 0
// without an error line. (make ends itself with a SIGINT it receives, so it
// exited 130 while the demo shared its process group.)
func TestCtrlCUnderMake(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte("demo:\n\t@"+os.Args[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(makeBin, "demo")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=1")
	tty, err := pty.Start(cmd) // make leads a session on the pty, as a shell's foreground job
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	more, read := make(chan struct{}, 1), make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 1024)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			select {
			case more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	shown := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	timeout := time.After(30 * time.Second)
	for !strings.Contains(shown(), "serving") {
		select {
		case <-more:
		case <-read:
			t.Fatalf("make ended before the demo served:\n%s", shown())
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("the demo did not start under make:\n%s", shown())
		}
	}
	if _, err := io.WriteString(tty, "\x03"); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		err = <-waited
	}
	tty.Close()
	<-read
	if err != nil {
		t.Errorf("make demo after Ctrl-C: %v, want exit status 0", err)
	}
	if !strings.Contains(shown(), "==> stopped") || strings.Contains(shown(), "***") {
		t.Errorf("the terminal showed:\n%s\nwant the demo's stop line and no make error", shown())
	}
}
