package cli

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/creack/pty"
)

func TestLogLevel(t *testing.T) {
	tests := []struct {
		g        Globals
		command  string
		terminal bool
		want     string
	}{
		{Globals{}, "list", true, "warn"},
		{Globals{}, "list", false, "info"},
		{Globals{}, "server", true, "info"},
		{Globals{Verbose: true}, "connect <target>", true, "info"},
		{Globals{Quiet: true}, "connect <target>", false, "warn"},
		{Globals{LogLevel: "debug"}, "list", true, "debug"},
		{Globals{LogLevel: "debug", Quiet: true}, "list", true, "warn"},
		{Globals{LogLevel: "error", Verbose: true}, "list", true, "error"},
	}
	for _, tt := range tests {
		if got := tt.g.logLevel(tt.command, tt.terminal); got != tt.want {
			t.Errorf("%+v %s terminal=%v: %s, want %s", tt.g, tt.command, tt.terminal, got, tt.want)
		}
	}
}

// A log line first erases the progress indicator's frame.
func TestStderrLineErasesIndicator(t *testing.T) {
	var b bytes.Buffer
	s := &stderrLine{w: &b}
	s.draw("| opening…")
	io.WriteString(s, "level=WARN msg=x\n")
	io.WriteString(s, "level=WARN msg=y\n")
	s.erase()
	want := eraseLine + "| opening…" + eraseLine + "level=WARN msg=x\nlevel=WARN msg=y\n"
	if b.String() != want {
		t.Errorf("%q, want %q", b.String(), want)
	}
}

// On a terminal a client command shows no info logs unless -v (then no
// progress indicator, which would say the same).
func TestClientOnTerminal(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	t.Setenv("RDSPROXY_LOG_LEVEL", "")
	addr := startListServer(t, "orders")
	for _, tt := range []struct {
		flags []string
		info  bool
	}{{nil, false}, {[]string{"-v"}, true}} {
		shown := onTerminal(t, append([]string{"list", "--via", "direct", "--server", addr}, tt.flags...))
		if strings.Contains(shown, "level=INFO") != tt.info || strings.Contains(shown, "opening the") == tt.info {
			t.Errorf("%v: want info logs %v, indicator %v:\n%q", tt.flags, tt.info, !tt.info, shown)
		}
	}
}

// onTerminal runs args with stderr on a pty and returns what it showed.
func onTerminal(t *testing.T, args []string) string {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	shown := make(chan string)
	go func() {
		var b bytes.Buffer
		_, err := io.Copy(&b, ptmx)
		if err != nil && !errors.Is(err, syscall.EIO) {
			b.WriteString("read: " + err.Error())
		}
		shown <- b.String()
	}()
	var out bytes.Buffer
	if code := Run(args, Env{Stdout: &out, Stderr: tty}); code != ExitOK {
		t.Errorf("%v: exit %d", args, code)
	}
	tty.Close()
	return <-shown
}
