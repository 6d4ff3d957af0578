package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/cli"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// rdsproxy doctor says who the caller is as the server sees it (verified
// by the world's STS), and its test login carries the identity.
func TestDoctorNamesTheVerifiedCaller(t *testing.T) {
	world := startTestWorld(t)
	watcher := newWorldWatcher(t, world)
	pem, err := os.ReadFile(world.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := server.RootCAs(pem)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Targets: watcher, DialOverrides: world.DialMap, RootCAs: roots, Logger: sb.logs.logger("server"),
		Identity: &server.IdentityConfig{ServerID: "doctor-server", Region: sandbox.Region, Endpoint: world.STS.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	addr := serve(t, &wg, func(ln net.Listener) error { return srv.Serve(ctx, ln) })
	t.Setenv("HOME", t.TempDir())
	for _, kv := range world.ClientEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	var out bytes.Buffer
	code := cli.Run([]string{"doctor", "--log-level", "error", "--via", "direct", "--server", addr, "orders"},
		cli.Env{Stdout: &out, Stderr: &out, Version: "test"})
	t.Logf("%s", out.String())
	for _, want := range []string{
		"; you are " + sandbox.PrincipalUser.ARN + " (as the server sees it)\n",
		"✓ test login: logged in to orders as " + sandbox.UserIAM,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if code != cli.ExitOK {
		t.Errorf("exit %d, want %d", code, cli.ExitOK)
	}
}

// doctor's test login goes to the database connect's strings name: a
// target with no database (no rdsproxy:db-name tag, no database: key) is
// reached at postgres, the database every RDS instance has, not at a
// database named after the user; a tagged database that does not exist
// is blamed on the tag.
func TestDoctorTargetDatabase(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	for _, kv := range append(sandboxAWSEnv(), "AWS_ENDPOINT_URL_STS="+sb.sts.URL()) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, tc := range []struct {
		database string
		code     int
		want     string
	}{
		{"", cli.ExitOK, "✓ test login: logged in to app as " + sandbox.UserIAM},
		{"nosuch", cli.ExitFailure, `✗ test login: database "nosuch" does not exist
  fix: the target's rdsproxy:db-name tag (a static target: database:) names nosuch, which the database does not have: change it to one it has`},
	} {
		targets := slices.Clone(sb.targets)
		for i := range targets {
			targets[i].Database = tc.database
		}
		snap, err := discovery.NewSnapshot(targets, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		st := startStack(t, func(c *server.Config) { c.Targets = fixedTargets{snap} })
		var out bytes.Buffer
		code := cli.Run([]string{"doctor", "--log-level", "error", "--via", "direct", "--server", st.serverAddr, "--user", sandbox.UserIAM, "app"},
			cli.Env{Stdout: &out, Stderr: &out, Version: "test"})
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("database %q: doctor exited %d, want %d with %q:\n%s", tc.database, code, tc.code, tc.want, out.String())
		}
	}
}
