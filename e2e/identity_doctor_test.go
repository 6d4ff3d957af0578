package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rdsproxy/rdsproxy/cli"
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
