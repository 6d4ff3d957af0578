package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/server"
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
	t.Setenv("HOME", t.TempDir()) // no user configuration file
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
	t.Setenv("HOME", t.TempDir())
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
		// The server's ConfigError, with the flag named by the CLI.
		{"dial beyond login", "", []string{"--dial-timeout", "40s"}, "--dial-timeout: 40s must not exceed the login timeout (30s)"},
		{"bad sts endpoint", "", []string{"--sts-endpoint", "ftp://sts"}, "--sts-endpoint:"},
		{"zero limit", "", []string{"--max-sessions", "0"}, "--max-sessions must be positive"},
		{"one address for both listeners", "", []string{"--listen", "127.0.0.1:7000", "--admin-addr", "127.0.0.1:7000"}, "--listen and --admin-addr are both 127.0.0.1:7000"},
		{"negative timeout", "", []string{"--drain-timeout=-1s"}, "--drain-timeout must be positive"},
		{"not YAML", write("e.yaml", "listen: [\n"), nil, "configuration file"},
		// kong reads a bare number as nanoseconds: this was a refresh every 30ns.
		{"duration without a unit", write("f.yaml", "refresh-interval: 30\n"), nil, "--refresh-interval: configuration file: 30 has no unit; write it with one, such as 30s or 30m"},
		{"fractional duration without a unit", write("g.yaml", "drain-timeout: 1.5\n"), nil, "--drain-timeout: configuration file: 1.5 has no unit"},
		{"refreshes that hammer the RDS API", "", []string{"--refresh-interval", "1ms"}, "--refresh-interval: 1ms is below 10s"},
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

// startListServer serves GET /v1/targets with one static target named
// name, serving users (any, when none are given).
func startListServer(t *testing.T, name string, users ...string) string {
	t.Helper()
	snap, err := discovery.NewSnapshot([]discovery.Target{{Name: name, Endpoint: name + ".example:5432", Region: "us-east-1",
		Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull, Source: "static", Users: users}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := server.RootCAs(nil)
	srv, err := server.New(server.Config{Targets: fixedSnapshot{snap}, RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

type fixedSnapshot struct{ s *discovery.Snapshot }

func (f fixedSnapshot) Current() *discovery.Snapshot { return f.s }

// Named servers in the configuration file: the default-server's settings
// apply, --use picks another, and the environment and flags still beat
// the file.
func TestNamedServers(t *testing.T) {
	a, b := startListServer(t, "alpha"), startListServer(t, "beta")
	file := filepath.Join(t.TempDir(), "config.yaml")
	body := fmt.Sprintf("default-server: a\nservers:\n  a: {via: direct, server: %q}\n  b: {via: direct, server: %q}\n", a, b)
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default-server", nil, nil, "alpha"},
		{"--use picks another", nil, []string{"--use", "b"}, "beta"},
		{"RDSPROXY_USE picks another", map[string]string{"RDSPROXY_USE": "b"}, nil, "beta"},
		{"environment beats the file", map[string]string{"RDSPROXY_SERVER": b}, nil, "beta"},
		{"flag beats environment and file", map[string]string{"RDSPROXY_SERVER": b}, []string{"--use", "b", "--server", a}, "alpha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			code := Run(append([]string{"list", "--json", "--config", file}, tt.args...), Env{Stdout: &out, Stderr: &errOut})
			if code != ExitOK {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if !strings.Contains(out.String(), `"name": "`+tt.want+`"`) {
				t.Fatalf("listed %s, want target %s", out.String(), tt.want)
			}
		})
	}
	var errOut bytes.Buffer
	if code := Run([]string{"list", "--config", file, "--use", "nope"}, Env{Stdout: &errOut, Stderr: &errOut}); code == ExitOK ||
		!strings.Contains(errOut.String(), `no server "nope" (it has: a, b)`) {
		t.Fatalf("unknown --use: exit %d, %s", code, errOut.String())
	}
	// rdsproxy server takes no client's server entry, as the user's file's
	// default-server would otherwise give it one.
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	userFile := filepath.Join(xdg, "rdsproxy", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(userFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(userFile, []byte("default-server: dev\nservers:\n  dev: {via: ssm, region: eu-west-1}\nmax-sessions: 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, stderr, code := dryRun(t)
	if code != ExitOK || cfg["region"] != nil || cfg["max-sessions"] != 9 { // top-level keys still apply
		t.Fatalf("server with a client's default-server in the user's file: exit %d, region %v, max-sessions %v (%s)", code, cfg["region"], cfg["max-sessions"], stderr)
	}
}
