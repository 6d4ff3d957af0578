package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// Completion scripts parse, name every command and flag (the --no- form
// of a negatable one too), and complete target names from the last list
// this machine fetched.
func TestCompletion(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	addr := startListServer(t, "orders")
	var out bytes.Buffer
	if code := Run([]string{"list", "--via", "direct", "--server", addr}, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
		t.Fatalf("list: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := Run([]string{"__targets"}, Env{Stdout: &out, Stderr: &out}); code != ExitOK || strings.TrimSpace(out.String()) != "orders" {
		t.Fatalf("__targets: exit %d, %q", code, out.String())
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out.Reset()
		if code := Run([]string{"completion", shell}, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
			t.Fatalf("completion %s: exit %d", shell, code)
		}
		commands := "server connect list psql token env doctor completion version"
		for _, want := range []string{commands, "ssm-server", "no-ssm-striping", "no-require-identity", "rdsproxy __targets"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s script lacks %q", shell, want)
			}
		}
	}
	out.Reset()
	Run([]string{"completion", "bash"}, Env{Stdout: &out, Stderr: &out})
	if err := exec.Command("bash", "-n", "-c", out.String()).Run(); err != nil {
		t.Fatalf("bash script does not parse: %v", err)
	}
}

// Without a target and without a terminal, connect says which targets exist.
func TestConnectWithoutTargetNeedsOne(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATESTCONNECT00001") // connect checks credentials first
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	addr := startListServer(t, "orders")
	var out bytes.Buffer
	code := Run([]string{"connect", "--via", "direct", "--server", addr}, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out})
	if code != ExitUsage || !strings.Contains(out.String(), "name a target; the server serves: orders") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}
