package sandbox_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

const orphanHelperEnv = "RDSPROXY_SANDBOX_ORPHAN_HELPER_DIR"

// TestPostgresDiesWithParent kills (SIGKILL, so no Close and no cleanup) a
// child test process that started PostgreSQL, and checks the postmaster
// exits on its own.
func TestPostgresDiesWithParent(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPostgresOrphanHelper$", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), orphanHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if sc.Text() == "postgres ready" {
			ready = true
			break
		}
	}
	if !ready {
		_ = cmd.Wait()
		t.Fatal("helper process did not start postgres")
	}
	pid := postmasterPID(t, filepath.Join(dir, "data"))
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for alive(pid) {
		select {
		case <-deadline:
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d still running 20s after its parent was killed", pid)
		case <-tick.C:
		}
	}
}

// TestPostgresOrphanHelper is the child of TestPostgresDiesWithParent; it
// does nothing when run normally.
func TestPostgresOrphanHelper(t *testing.T) {
	dir := os.Getenv(orphanHelperEnv)
	if dir == "" {
		return
	}
	pg, err := sandbox.StartPostgres(context.Background(), dir, nil)
	if err != nil {
		t.Fatalf("StartPostgres: %v", err)
	}
	_ = pg
	os.Stdout.WriteString("postgres ready\n")
	select {} // wait to be killed
}

func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// alive reports whether pid exists and is not a zombie (a container's init
// may not reap re-parented processes promptly).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
