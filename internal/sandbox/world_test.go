package sandbox

import (
	"path/filepath"
	"strings"
	"testing"
)

// Without moto_server, StartWorld stops the PostgreSQL it started and
// returns the real reason (it used to panic closing a nil *World).
func TestStartWorldWithoutMoto(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	w, err := StartWorld(t.Context(), dir, nil, nil)
	if err == nil {
		w.Close()
		t.Fatal("StartWorld succeeded without moto_server on PATH")
	}
	if w != nil {
		t.Errorf("StartWorld returned a World with its error %v", err)
	}
	if !strings.Contains(err.Error(), "moto_server") {
		t.Errorf("error %q does not name moto_server", err)
	}
	if pids, _ := filepath.Glob(filepath.Join(dir, "*", "postmaster.pid")); len(pids) > 0 {
		t.Errorf("PostgreSQL still running: %s exists", pids[0])
	}
}
