package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
)

// parseConnect parses a connect command line as rdsproxy would.
func parseConnect(t *testing.T, args ...string) *ConnectCmd {
	t.Helper()
	var cli CLI
	parser, err := newParser(&cli, Env{Stdout: io.Discard, Stderr: io.Discard}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"connect", "--via", "direct", "--server", "db.internal:5480"}, args...)
	if _, err := parser.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return &cli.Connect
}

// busyPort holds a loopback port for the test's duration.
func busyPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// A busy port is a failure (exit 1) that names where the port came from;
// the advice is another --port when --port chose it, --port otherwise.
func TestConnectBusyPortAdvice(t *testing.T) {
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	port := busyPort(t)
	busy := strconv.Itoa(port)
	tests := []struct {
		args []string
		tag  int
		want string
	}{
		{[]string{"--port", busy}, 0, "target app listens on 127.0.0.1:" + busy + " (--port), which is busy: free it or pass another --port: "},
		{nil, port, "target app listens on 127.0.0.1:" + busy + " (its rdsproxy:local-port tag), which is busy: free it or pass --port: "},
	}
	for _, tt := range tests {
		c := parseConnect(t, tt.args...)
		_, _, err := c.listenTarget(discovery.Target{Name: "app", LocalPort: tt.tag}, newStateStore(), "")
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != ExitFailure || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q, tag %d: %v; want exit 1 and %q", tt.args, tt.tag, err, tt.want)
		}
	}
}

// An --address this machine does not have (192.0.2.1 is TEST-NET-1) is
// not called busy, with or without a port of its own: the advice is an
// address the machine has. Nothing is sent: the bind itself fails.
func TestConnectForeignAddressAdvice(t *testing.T) {
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	for _, args := range [][]string{{"--address", "192.0.2.1"}, {"--address", "192.0.2.1", "--port", "6543"}} {
		c := parseConnect(t, args...)
		_, _, err := c.listenTarget(discovery.Target{Name: "app"}, newStateStore(), "")
		want := "target app cannot listen on 192.0.2.1:"
		advice := "--address 192.0.2.1 is not an address of this machine; pass one it has (the default is 127.0.0.1): "
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != ExitFailure || !strings.HasPrefix(err.Error(), want) ||
			!strings.Contains(err.Error(), advice) || strings.Contains(err.Error(), "busy") {
			t.Errorf("%q: %v; want exit 1, %q and %q", args, err, want, advice)
		}
	}
}

// --port 0 serves on any free port, even when the target has a port of
// its own (here a busy one), prints that port, and does not replace the
// port remembered for next time.
func TestConnectPortZeroIsAnyFreePort(t *testing.T) {
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	tag := busyPort(t)
	c := parseConnect(t, "--port", "0")
	store := newStateStore()
	store.rememberPort(c.serverKey(), "app", tag)
	lns, ci, err := c.listenTarget(discovery.Target{Name: "app", LocalPort: tag}, store, "")
	if err != nil {
		t.Fatalf("--port 0: %v", err)
	}
	defer closeAll(lns)
	real := lns[0].Addr().(*net.TCPAddr).Port
	if real == 0 || real == tag || ci.Port != real {
		t.Errorf("--port 0 listens on %d, announces %d; the target's port is %d", real, ci.Port, tag)
	}
	var out bytes.Buffer
	c.printTarget(Env{Stdout: &out}, ci)
	for _, want := range []string{fmt.Sprintf("app → 127.0.0.1:%d\n", real), fmt.Sprintf(`psql "host=127.0.0.1 port=%d `, real)} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed:\n%s\nwant %q", out.String(), want)
		}
	}
	if got := store.port(c.serverKey(), "app"); got != tag {
		t.Errorf("--port 0 changed the remembered port from %d to %d", tag, got)
	}
}

// A port that may not be bound (below 1024, without privileges) is not
// called busy: the advice is a port above 1023.
func TestConnectPrivilegedPortAdvice(t *testing.T) {
	c := parseConnect(t, "--port", "80")
	denied := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	err := c.listenError(contract.Target{Name: "app"}, "127.0.0.1:80", 80, "--port", denied)
	if want := "target app may not listen on 127.0.0.1:80 (--port): ports below 1024 need privileges; pass --port above 1023: "; !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "busy") {
		t.Fatalf("%v; want %q", err, want)
	}
}
