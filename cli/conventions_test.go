package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/rdsproxy/rdsproxy/discovery"
)

// --version and the version command print the version, the Go version
// and the platform.
func TestVersion(t *testing.T) {
	want := regexp.MustCompile(`^rdsproxy v1\.2\.3 \(go[\d.]+\S*, ` + runtime.GOOS + "/" + runtime.GOARCH + `\)\n$`)
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		code := Run(args, Env{Stdout: &out, Stderr: &out, Version: "v1.2.3"})
		if code != ExitOK || !want.MatchString(out.String()) {
			t.Errorf("%v: exit %d, %q", args, code, out.String())
		}
	}
}

// The configuration file is looked for in $XDG_CONFIG_HOME when it is set.
func TestConfigFileInXDGConfigHome(t *testing.T) {
	home, xdg := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("RDSPROXY_CONFIG", "")
	os.Unsetenv("RDSPROXY_CONFIG")
	if err := os.MkdirAll(filepath.Join(xdg, "rdsproxy"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "default-server: lab\nservers:\n  lab:\n    via: direct\n  prod:\n    via: ssm\n"
	if err := os.WriteFile(filepath.Join(xdg, "rdsproxy", "config.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := Run([]string{"list"}, Env{Stdout: &out, Stderr: &out})
	if code != ExitUsage || !strings.Contains(out.String(), "--via direct needs --server") {
		t.Errorf("list with $XDG_CONFIG_HOME/rdsproxy/config.yaml (via: direct): exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := Run([]string{"__servers"}, Env{Stdout: &out, Stderr: &out}); code != ExitOK || out.String() != "lab\nprod\n" {
		t.Errorf("__servers: exit %d, %q", code, out.String())
	}
	// With a named file too, --use completes every server it can name.
	named := filepath.Join(t.TempDir(), "sandbox.yaml")
	if err := os.WriteFile(named, []byte("servers:\n  sandbox:\n    via: direct\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RDSPROXY_CONFIG", named)
	out.Reset()
	if code := Run([]string{"__servers"}, Env{Stdout: &out, Stderr: &out}); code != ExitOK || out.String() != "lab\nprod\nsandbox\n" {
		t.Errorf("__servers with RDSPROXY_CONFIG: exit %d, %q", code, out.String())
	}
}

// --use with a name the file lacks says so, without kong's "--help:" prefix.
func TestUseUnknownServer(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(conf, []byte("servers:\n  lab:\n    via: direct\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := Run([]string{"list", "--config", conf, "--use", "nope"}, Env{Stdout: &out, Stderr: &out})
	want := "rdsproxy: error: configuration file has no server \"nope\" (it has: lab)\n"
	if code != ExitUsage || !strings.HasPrefix(out.String(), want) {
		t.Errorf("exit %d:\n%s\nwant it to start with %q", code, out.String(), want)
	}
}

// Connection strings for an IPv6 or wildcard listener are valid: the
// host in brackets in URLs, a loopback address instead of a wildcard.
func TestConnInfoAddresses(t *testing.T) {
	target := discovery.Target{Name: "app", Database: "db", Users: []string{"u"}}
	tests := []struct {
		ip              string
		host, dsn, jdbc string
	}{
		{"127.0.0.1", "127.0.0.1", "postgresql://u@127.0.0.1:5433/db?sslmode=disable", "jdbc:postgresql://127.0.0.1:5433/db?sslmode=disable&user=u"},
		{"::1", "::1", "postgresql://u@[::1]:5433/db?sslmode=disable", "jdbc:postgresql://[::1]:5433/db?sslmode=disable&user=u"},
		{"0.0.0.0", "127.0.0.1", "postgresql://u@127.0.0.1:5433/db?sslmode=disable", "jdbc:postgresql://127.0.0.1:5433/db?sslmode=disable&user=u"},
		// Go listens on both families for either wildcard, and reports
		// 0.0.0.0 as [::]; ::1 failed where IPv6 is off.
		{"::", "127.0.0.1", "postgresql://u@127.0.0.1:5433/db?sslmode=disable", "jdbc:postgresql://127.0.0.1:5433/db?sslmode=disable&user=u"},
	}
	for _, tt := range tests {
		ci := newConnInfo(target, &net.TCPAddr{IP: net.ParseIP(tt.ip), Port: 5433}, "", "")
		if ci.Host != tt.host || ci.DSN != tt.dsn || ci.JDBC != tt.jdbc {
			t.Errorf("%s: host %s, DSN %s, JDBC %s", tt.ip, ci.Host, ci.DSN, ci.JDBC)
		}
		if want := `psql "host=` + tt.host + ` port=5433 user=u dbname=db sslmode=disable"`; ci.Psql != want {
			t.Errorf("%s: %s, want %s", tt.ip, ci.Psql, want)
		}
	}
}

// An --address beyond loopback gets a warning: whoever reaches it logs
// in with the user's AWS identity.
func TestAddressBeyondLoopbackWarns(t *testing.T) {
	for addr, warns := range map[string]bool{"127.0.0.1": false, "::1": false, "localhost": false, "127.0.0.2": false,
		"0.0.0.0": true, "::": true, "192.168.1.5": true, "myhost.lan": true} {
		var out bytes.Buffer
		warnBeyondLoopback(slog.New(slog.NewTextHandler(&out, nil)), addr)
		if got := strings.Contains(out.String(), "logs in to the databases with your AWS identity"); got != warns {
			t.Errorf("--address %s: warned %v, want %v: %s", addr, got, warns, out.String())
		}
	}
}

// bash completes the values of --via, --log-level and --use.
func TestCompletionFlagValues(t *testing.T) {
	var script bytes.Buffer
	if code := Run([]string{"completion", "bash"}, Env{Stdout: &script, Stderr: &script}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, script.String())
	}
	tests := []struct{ words, want string }{
		{`rdsproxy connect --via ""`, "ssm kube direct"},
		{`rdsproxy list --via d`, "direct"},
		{`rdsproxy psql --log-level w`, "warn"},
		{`rdsproxy connect --use ""`, "lab prod"},
	}
	for _, tt := range tests {
		// rdsproxy is a stand-in here: the real __servers is tested above.
		prog := script.String() + "\nrdsproxy() { [ \"$1\" = __servers ] && printf 'lab\\nprod\\n'; }\n" +
			"COMP_WORDS=(" + tt.words + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _rdsproxy; echo \"${COMPREPLY[*]}\""
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tt.want {
			t.Errorf("%s: %q (%v), want %q", tt.words, out, err, tt.want)
		}
	}
}

// A command interrupted before it finished exits 130 without the error
// chain its cancellation produced; other errors keep their status.
func TestExitStatusInterrupted(t *testing.T) {
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	interrupted := &ExitError{Code: ExitFailure, Err: fmt.Errorf("fetch target list: %w", context.Canceled)}
	tests := []struct {
		ctx    context.Context
		err    error
		code   int
		stderr string
	}{
		{cancelled, interrupted, ExitInterrupted, ""},
		{t.Context(), interrupted, ExitFailure, "rdsproxy: fetch target list: context canceled\n"},
		{cancelled, &ExitError{Code: 143}, 143, ""},
		{cancelled, nil, ExitOK, ""},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		if code := exitStatus(tt.ctx, tt.err, Env{Stderr: &stderr}); code != tt.code || stderr.String() != tt.stderr {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tt.err, code, stderr.String(), tt.code, tt.stderr)
		}
	}
}

// An ExitError without an error (the command already said what was
// wrong) formats as its exit status instead of panicking, wrapped or not.
func TestExitErrorWithoutError(t *testing.T) {
	err := fmt.Errorf("run: %w", &ExitError{Code: ExitUsage})
	if got := fmt.Sprintf("%v", err); got != "run: exit status 2" {
		t.Fatalf("formatted as %q", got)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Unwrap() != nil {
		t.Fatalf("errors.As: %v, Unwrap %v", ee, ee.Unwrap())
	}
}
