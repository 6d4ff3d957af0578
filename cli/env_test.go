package cli

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// rdsproxy env prints exports for the listener connect serves (and
// remembers): the newest that still listens when several connects served
// the target; it warns when none listens, and says what to do for a
// target connect never served.
func TestEnvCommand(t *testing.T) {
	isolatedUser(t, "AKIATESTENV000000001", "us-east-1")
	addr := startListServer(t, "orders")
	server := []string{"--via", "direct", "--server", addr}

	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"connect", "orders", "--user", "alice"}, server...), Env{Stdout: pw, Stderr: io.Discard})
		pw.Close()
	}()
	block := readBlock(t, pr)
	go io.Copy(io.Discard, pr)
	port := strings.TrimPrefix(strings.Fields(block)[2], "127.0.0.1:")

	out, errOut, code := runEnv(append([]string{"env", "orders"}, server...))
	want := "export PGHOST=127.0.0.1\nexport PGPORT=" + port + "\nexport PGUSER=alice\nexport PGDATABASE=postgres\nexport PGSSLMODE=disable\n"
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("env while connect serves: exit %d\n%s%s\nwant\n%s", code, out, errOut, want)
	}
	// A second connect for the target, on a port of its own, that stops:
	// env points at the first, which still serves.
	ctx2, cancel2 := context.WithCancel(t.Context())
	pr2, pw2 := io.Pipe()
	done2 := make(chan error, 1)
	go func() {
		done2 <- run(ctx2, append([]string{"connect", "orders", "--user", "alice", "--port", "0"}, server...), Env{Stdout: pw2, Stderr: io.Discard})
		pw2.Close()
	}()
	port2 := strings.TrimPrefix(strings.Fields(readBlock(t, pr2))[2], "127.0.0.1:")
	go io.Copy(io.Discard, pr2)
	cancel2()
	<-done2
	out, errOut, code = runEnv(append([]string{"env", "orders"}, server...))
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("env after a second connect (port %s) stopped: exit %d\n%s%s\nwant\n%s", port2, code, out, errOut, want)
	}
	cancel()
	<-done
	// Nothing serves: the newest listener, with a warning.
	out, errOut, code = runEnv(append([]string{"env", "orders", "--user", "bob"}, server...))
	if code != ExitOK || !strings.Contains(out, "export PGUSER=bob\n") || !strings.Contains(out, "export PGPORT="+port2+"\n") ||
		!strings.Contains(errOut, "nothing listens on 127.0.0.1:"+port2) {
		t.Errorf("env after both connects ended: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = runEnv([]string{"env", "orders", "--via", "direct", "--server", "127.0.0.1:1"})
	if code != ExitFailure || !strings.Contains(errOut, "has not served orders from this server yet") {
		t.Errorf("env for another server: exit %d\n%s", code, errOut)
	}
}

func readBlock(t *testing.T, r io.Reader) string {
	t.Helper()
	var b strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "  JDBC:") {
			return b.String()
		}
	}
	t.Fatalf("connect printed no connection block: %q", b.String())
	return ""
}

func runEnv(args []string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := Run(args, Env{Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), code
}
