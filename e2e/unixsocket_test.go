package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// connect --unix-socket serves psql on DIR/.s.PGSQL.PORT, in a directory
// only the user can enter, and removes the socket when it stops.
func TestBinaryConnectUnixSocket(t *testing.T) {
	st := startStack(t)
	dir := filepath.Join(t.TempDir(), "sockets")
	cmd := binaryPsql(t, st.serverAddr, "app") // for its environment
	cmd.Args = []string{cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "app",
		"--user", sandbox.UserIAM, "--unix-socket", dir}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	unix := regexp.MustCompile(`^  unix:  psql "(.*)"$`)
	var conninfo string
	sc := bufio.NewScanner(stdout)
	for conninfo == "" && sc.Scan() {
		if m := unix.FindStringSubmatch(sc.Text()); m != nil {
			conninfo = m[1]
		}
	}
	go io.Copy(io.Discard, stdout)
	if conninfo == "" {
		t.Fatal("connect printed no unix: line")
	}
	out, err := exec.Command("psql", "-X", "-At", "-c", "SELECT 'over '||current_user", conninfo).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "over "+sandbox.UserIAM {
		t.Fatalf("psql %q: %v\n%s", conninfo, err, out)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("socket directory: %v, %v; want mode 0700", info.Mode(), err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("connect did not stop on SIGTERM")
	}
	done <- nil // for the cleanup
	if sockets, _ := filepath.Glob(filepath.Join(dir, ".s.PGSQL.*")); len(sockets) > 0 {
		t.Errorf("socket left behind: %v", sockets)
	}
}
