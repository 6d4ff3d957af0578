package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sock")
	ln, err := listenUnix(dir, 5433)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", info.Mode(), err)
	}
	if want := filepath.Join(dir, ".s.PGSQL.5433"); ln.Addr().String() != want {
		t.Errorf("listens on %s, want %s", ln.Addr(), want)
	}
	if _, err := listenUnix(dir, 5433); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second listener on a live socket: %v", err)
	}
	// A socket file left behind by a process that died is replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = listenUnix(dir, 5433)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	open := t.TempDir()
	os.Chmod(open, 0o755)
	if _, err := listenUnix(open, 5433); err == nil || !strings.Contains(err.Error(), "open to other users") {
		t.Errorf("in a directory others may enter: %v", err)
	}
}
