package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// Numbers in the file are read as kong reads them on the command line:
// quoted, in hex, with underscores.
func TestConfigNumbers(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	for text, want := range map[string]int{`"16"`: 16, `"0x10"`: 16, `"1_000"`: 1000, "16": 16} {
		path := filepath.Join(t.TempDir(), "n.yaml")
		if err := os.WriteFile(path, []byte("max-sessions: "+text+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, stderr, code := dryRun(t, "--config", path)
		if code != ExitOK || cfg["max-sessions"] != want {
			t.Errorf("max-sessions: %s: exit %d, max-sessions %v, want %v\n%s", text, code, cfg["max-sessions"], want, stderr)
		}
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
		{"unknown target field", write("b.yaml", "listen: 127.0.0.1:5480\ntargets:\n  - name: a\n    endpont: x\n"), nil,
			"targets: line 4: unknown key endpont in a target (keys: name, endpoint, region, auth, tls, database, users, read-only, local-port, principals)"},
		{"targets not a list", write("b2.yaml", "targets:\n  name: a\n"), nil, "targets: line 2: found a map, want a list of targets (each entry starting with - name:)"},
		{"target values of the wrong kind", write("b3.yaml", "targets:\n  - name: [a]\n    endpoint: a.x:5432\n    local-port: abc\n    read-only: maybe\n    users: x\n"), nil,
			"targets: line 2: found a list, want one value; line 4: found the text `abc`, want a number; line 5: found the text `maybe`, want true or false; line 6: found the text `x`, want a list"},
		{"targets' lines counted in the file", write("b6.yaml", "targets:\n\n  # first\n  - name: a\n\n    endpoint: >\n      a.x:5432\n    # the port\n    users: [\n      a,\n      b]\n    local-port: abc\n"), nil,
			"targets: line 12: found the text `abc`, want a number"},
		{"a list for a one-value flag", write("b4.yaml", "listen: [127.0.0.1:5480]\n"), nil, "--listen: configuration file: give one value here, not a list or a map"},
		{"text for a number", write("b5.yaml", "max-sessions: many\n"), nil, `--max-sessions: configuration file: "many" is not a whole number`},
		{"a fraction for a whole number", write("b7.yaml", "max-sessions: 2.7\n"), nil, "--max-sessions: configuration file: 2.7 is not a whole number"},
		{"a switch for a number", write("b8.yaml", "max-sessions: true\n"), nil, "--max-sessions: configuration file: true is not a number"},
		{"a word for a switch", write("b9.yaml", "require-identity: maybe\n"), nil, `--require-identity: configuration file: "maybe" is neither true nor false`},
		{"a number for text", write("b10.yaml", "listen: 5480\n"), nil, `--listen must be HOST:PORT, not "5480"`},
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

// userConfig gives the test a home of its own with no RDSPROXY_* or AWS
// settings, writes body (if any) as the user's configuration file where
// the README puts it, ~/.config/rdsproxy/config.yaml, and returns the
// home directory.
func userConfig(t *testing.T, body string) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"XDG_CONFIG_HOME", "RDSPROXY_CONFIG", "RDSPROXY_USE", "RDSPROXY_VIA", "RDSPROXY_SERVER",
		"RDSPROXY_SSM_SERVER", "RDSPROXY_USER", "AWS_PROFILE", "AWS_REGION"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	if body != "" {
		writeConfig(t, filepath.Join(home, ".config", "rdsproxy", "config.yaml"), body)
	}
	return home
}

func writeConfig(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseClient parses a connect command line as rdsproxy would and returns
// the settings the client would use.
func parseClient(t *testing.T, args ...string) (*ConnectCmd, error) {
	t.Helper()
	var cli CLI
	parser, err := newParser(&cli, Env{Stdout: io.Discard, Stderr: io.Discard}, func(int) {})
	if err != nil {
		return nil, err
	}
	_, err = parser.Parse(append([]string{"connect"}, args...))
	return &cli.Connect, err
}

// readmeConfig is the user's file exactly as the README shows it.
const readmeConfig = `default-server: prod
user: alice                    # any flag, as its long name
servers:
  prod:    {via: ssm, ssm-server: prod, profile: prod-dev, region: us-east-1}
  staging: {via: kube, kube-context: staging, kube-namespace: rdsproxy}
  lab:     {via: direct, server: 10.1.2.3:5480}
`

// The file --config or RDSPROXY_CONFIG names beats the user's file key by
// key, and both files' servers are there for --use. Before, the user's
// default-server entry still applied under the named file's (the demo's
// env.sh got profile prod-dev), and --use of a server only the named file
// had was an error from the user's file.
func TestConfigNamedFileBeatsUserFile(t *testing.T) {
	home := userConfig(t, readmeConfig)
	// The same file, named as the old code found it too (TestConfigFileInHome
	// covers $HOME alone).
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	dir := t.TempDir()
	// As scripts/demo writes it.
	sandbox := writeConfig(t, filepath.Join(dir, "sandbox.yaml"), "default-server: sandbox\nservers:\n  sandbox:\n    via: ssm\n    ssm-server: sandbox\n    user: demo\n")
	topOnly := writeConfig(t, filepath.Join(dir, "top.yaml"), "user: carol\n")
	ci := writeConfig(t, filepath.Join(dir, "ci.yaml"), "via: direct\nserver: ci.internal:5480\nregion: eu-west-1\n")
	clash := writeConfig(t, filepath.Join(dir, "clash.yaml"), "servers:\n  prod: {via: direct, server: 127.0.0.1:1}\n")
	type want struct{ via, server, ssmServer, profile, region, user string }
	sandboxWant := want{"ssm", "", "sandbox", "", "", "demo"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want want
	}{
		{"named file's default-server, nothing of the user's", nil, []string{"--config", sandbox}, sandboxWant},
		{"RDSPROXY_CONFIG like the demo's env.sh", map[string]string{"RDSPROXY_CONFIG": sandbox}, nil, sandboxWant},
		{"--use a server of the named file", nil, []string{"--config", sandbox, "--use", "sandbox"}, sandboxWant},
		{"--use a server of the user's file", nil, []string{"--config", sandbox, "--use", "lab"}, want{"direct", "10.1.2.3:5480", "rdsproxy", "", "", "alice"}},
		// A named file without default-server selects no server: the
		// user's default (prod, with its profile) belongs to another setup.
		{"no user's default-server under a named file without one", nil, []string{"--config", topOnly}, want{"ssm", "", "rdsproxy", "", "", "carol"}},
		{"named file's top level beats the user's default server", nil, []string{"--config", ci}, want{"direct", "ci.internal:5480", "rdsproxy", "", "eu-west-1", "alice"}},
		{"named file's top level beats the entry --use picks from the user's file", nil, []string{"--config", ci, "--use", "prod"},
			want{"direct", "ci.internal:5480", "prod", "prod-dev", "eu-west-1", "alice"}},
		{"named file's entry replaces the user's of the same name", nil, []string{"--config", clash, "--use", "prod"}, want{"direct", "127.0.0.1:1", "rdsproxy", "", "", "alice"}},
		{"no named file", nil, nil, want{"ssm", "", "prod", "prod-dev", "us-east-1", "alice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := parseClient(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			got := want{c.Via, c.Server, c.SSMServer, c.Profile, c.Region, c.User}
			if got != tt.want {
				t.Fatalf("via, server, ssm-server, profile, region, user = %q\nwant %q", got, tt.want)
			}
		})
	}
	var out bytes.Buffer
	code := Run([]string{"list", "--config", sandbox, "--use", "nosuch"}, Env{Stdout: &out, Stderr: &out})
	if want := `rdsproxy: error: no configuration file has a server "nosuch" (they have: lab, prod, sandbox, staging; read: `; code != ExitUsage || !strings.HasPrefix(out.String(), want) {
		t.Fatalf("unknown --use with two files: exit %d\n%s\nwant it to start with %q", code, out.String(), want)
	}
}

// The user's file is found under $HOME, as the README says, not under the
// password database's home directory (kong's "~"), which a different HOME
// (sudo -E, a container, a test) does not change.
func TestConfigFileInHome(t *testing.T) {
	userConfig(t, "default-server: lab\nservers:\n  lab: {via: direct, server: 10.1.2.3:5480}\n")
	c, err := parseClient(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.Via != "direct" || c.Server != "10.1.2.3:5480" {
		t.Fatalf("via %q, server %q: $HOME/.config/rdsproxy/config.yaml was not read", c.Via, c.Server)
	}
	// RDSPROXY_CONFIG='~/…' (quoted, so no shell expanded it) is under $HOME too.
	t.Setenv("RDSPROXY_CONFIG", "~/.config/rdsproxy/config.yaml")
	if c, err := parseClient(t); err != nil || c.Server != "10.1.2.3:5480" {
		t.Fatalf("RDSPROXY_CONFIG=~/…: %v, server %q", err, c.Server)
	}
}

// --use with no configuration file defining servers is a usage error that
// says where files are looked for, not a flag silently ignored.
func TestUseWithoutServers(t *testing.T) {
	home := userConfig(t, "")
	top := writeConfig(t, filepath.Join(t.TempDir(), "top.yaml"), "user: carol\n")
	userFile := filepath.Join(home, ".config", "rdsproxy", "config.yaml")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no file", nil, []string{"--use", "nosuch"},
			"rdsproxy: error: --use nosuch: no configuration file defines servers (none found: looked for " + userFile + "; --config FILE or RDSPROXY_CONFIG names another)\n"},
		{"RDSPROXY_USE", map[string]string{"RDSPROXY_USE": "nosuch"}, nil,
			"rdsproxy: error: --use nosuch: no configuration file defines servers (none found"},
		{"a file without servers", nil, []string{"--use", "nosuch", "--config", top},
			"rdsproxy: error: --use nosuch: no configuration file defines servers (read: " + top + ")\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			// --via direct without --server fails fast should --use pass.
			code := Run(append([]string{"list", "--via", "direct"}, tt.args...), Env{Stdout: &out, Stderr: &out})
			if code != ExitUsage || !strings.HasPrefix(out.String(), tt.want) {
				t.Fatalf("exit %d:\n%s\nwant it to start with %q", code, out.String(), tt.want)
			}
		})
	}
}
