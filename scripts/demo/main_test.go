package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without moto_server the demo reports why (it used to panic on a nil
// *World and hide the reason).
func TestDemoWithoutMoto(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := run(t.Context(), bin, &out)
	if err == nil || !strings.Contains(err.Error(), "moto_server") {
		t.Fatalf("demo without moto_server: %v, want an error naming moto_server; output:\n%s", err, out.String())
	}
}
