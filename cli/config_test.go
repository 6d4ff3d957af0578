package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dryRun runs `rdsproxy server --dry-run` and returns the effective
// configuration it prints.
func dryRun(t *testing.T, args ...string) (map[string]any, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(append([]string{"server", "--dry-run"}, args...), Env{Stdout: &out, Stderr: &errOut})
	var cfg map[string]any
	if code == ExitOK {
		if err := yaml.Unmarshal(out.Bytes(), &cfg); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, errOut.String(), code
}

// Each layer beats the ones below it: flags > RDSPROXY_* > file > defaults.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:1001\nmax-sessions: 11\nstartup-timeout: 3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name              string
		env               map[string]string
		args              []string
		listen, startupTO string
		maxSessions       int
	}{
		{"defaults", nil, nil, "127.0.0.1:5480", "10s", 1000},
		{"file beats defaults", nil, []string{"--config", file}, "127.0.0.1:1001", "3s", 11},
		{"env beats file", map[string]string{"RDSPROXY_LISTEN": "127.0.0.1:2002"}, []string{"--config", file}, "127.0.0.1:2002", "3s", 11},
		{"flag beats env and file", map[string]string{"RDSPROXY_LISTEN": "127.0.0.1:2002"},
			[]string{"--config", file, "--listen", "127.0.0.1:3003", "--max-sessions", "33"}, "127.0.0.1:3003", "3s", 33},
		{"config path from the environment", map[string]string{"RDSPROXY_CONFIG": file}, nil, "127.0.0.1:1001", "3s", 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, stderr, code := dryRun(t, tt.args...)
			if code != ExitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if cfg["listen"] != tt.listen || cfg["startup-timeout"] != tt.startupTO || cfg["max-sessions"] != tt.maxSessions {
				t.Fatalf("listen %v, startup-timeout %v, max-sessions %v; want %s, %s, %d",
					cfg["listen"], cfg["startup-timeout"], cfg["max-sessions"], tt.listen, tt.startupTO, tt.maxSessions)
			}
		})
	}
}

// Mistakes in the configuration are errors with a sentence, not ignored.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file string
		args       []string
		want       string
	}{
		{"unknown key", write("a.yaml", "listn: x\n"), nil, "unknown keys listn"},
		{"unknown target field", write("b.yaml", "targets:\n  - name: a\n    endpont: x\n"), nil, "field endpont not found"},
		{"target without region", write("c.yaml", "targets:\n  - name: a\n    endpoint: a.example:5432\n"), nil, "needs a region"},
		{"duplicate target names", write("d.yaml", "targets:\n  - {name: a, endpoint: a.x:5432, region: r}\n  - {name: a, endpoint: b.x:5432, region: r}\n"), nil, `"a"`},
		{"bad tag rule", "", []string{"--deny-tag", "=x"}, "has no key"},
		{"bad map", "", []string{"--map", "nohostport=1.2.3.4:5"}, "--map"},
		{"not YAML", write("e.yaml", "listen: [\n"), nil, "configuration file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", tt.file)
			}
			_, stderr, code := dryRun(t, args...)
			if code == ExitOK || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want a failure mentioning %q", code, stderr, tt.want)
			}
		})
	}
}
