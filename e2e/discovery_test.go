package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/cli"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// The server relays to databases discovered in moto by tags and refuses the
// others without dialing them; a tag change flips the decision at the next
// refresh, with no restart, and running sessions are not cut.
func TestDiscoveredTargets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	world, err := sandbox.StartWorld(ctx, dir, nil, sb.logs.logger("world-emulator"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { world.Close() })
	watcher := newWorldWatcher(t, world)
	serverAddr := startWorldServer(t, world, watcher)

	// rdsproxy list --json through the server equals the server's snapshot.
	var stdout bytes.Buffer
	if code := cli.Run([]string{"list", "--via", "direct", "--server", serverAddr, "--json"}, cli.Env{Stdout: &stdout, Stderr: os.Stderr}); code != 0 {
		t.Fatalf("rdsproxy list exit %d", code)
	}
	var listed server.TargetList
	if err := json.Unmarshal(stdout.Bytes(), &listed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(watcher.Current().Targets(), listed.Targets); diff != "" {
		t.Fatalf("rdsproxy list --json (-snapshot +listed):\n%s", diff)
	}

	reporting := connectDiscovered(t, world, serverAddr, "reporting")
	defer reporting.Close(ctx)

	// "restricted" carries env=restricted: denied, never dialed.
	before := world.Emulator.Accepted()
	_, err = dialDiscovered(world, serverAddr, "restricted")
	pgErr(t, err, "28000", `target "restricted" is not served`)
	if world.Emulator.Accepted() != before {
		t.Fatal("the server dialed a denied database")
	}

	// Flip: restricted loses its deny tag, reporting gains it.
	if err := world.Moto.RetagDatabase(ctx, sandbox.Region, "restricted", false, nil, "env"); err != nil {
		t.Fatal(err)
	}
	if err := world.Moto.RetagDatabase(ctx, sandbox.Region, "reporting-replica", false, map[string]string{"env": "restricted"}); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	connectDiscovered(t, world, serverAddr, "restricted").Close(ctx)
	_, err = dialDiscovered(world, serverAddr, "reporting")
	pgErr(t, err, "28000", `target "reporting" is not served`)
	// The session opened before the change still works.
	if err := reporting.Ping(ctx); err != nil {
		t.Fatalf("running session cut by a refresh: %v", err)
	}

	// Denying us-east-1's orders must not hand its name to eu-west-1's.
	if err := world.Moto.RetagDatabase(ctx, sandbox.Region, "orders", false, map[string]string{"env": "restricted"}); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if tgt, found := watcher.Current().Lookup("orders"); found {
		t.Fatalf("the name orders moved to %s", tgt.Endpoint)
	}
	if _, found := watcher.Current().Lookup("orders." + sandbox.WorldRegion2); !found {
		t.Fatal("orders.eu-west-1 lost its name")
	}
}

func newWorldWatcher(t *testing.T, world *sandbox.World) *discovery.Watcher {
	t.Helper()
	src, err := discovery.NewSource(world.Regions(), func(region string) discovery.RDSAPI {
		return rds.NewFromConfig(world.Moto.AWSConfig(region))
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := discovery.ParseRules(nil, []string{sandbox.WorldDeny})
	if err != nil {
		t.Fatal(err)
	}
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Fetch: src.Fetch,
		Policy: discovery.Policy{Rules: rules, Regions: world.Regions()}, Logger: sb.logs.logger("discovery")})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func startWorldServer(t *testing.T, world *sandbox.World, targets server.Targets) string {
	t.Helper()
	pem, err := os.ReadFile(world.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := server.RootCAs(pem)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Targets: targets, DialOverrides: world.DialMap, RootCAs: roots, Logger: sb.logs.logger("server")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	return serve(t, &wg, func(ln net.Listener) error { return srv.Serve(ctx, ln) })
}

// dialDiscovered connects straight to the server, naming a discovered
// target, with a token for its endpoint (or a dummy one if it is not listed).
func dialDiscovered(world *sandbox.World, serverAddr, name string) (*pgx.Conn, error) {
	cfg, err := newLocalConfig(serverAddr, sandbox.UserIAM)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["rdsproxy.target"] = name
	cfg.RuntimeParams[callerid.Param] = worldIdentity() // the binary server requires identity by default
	cfg.Password = "not-a-token"
	if endpoint := worldEndpoint(world, name); endpoint != "" {
		if cfg.Password, err = signWorldToken(endpoint); err != nil {
			return nil, err
		}
	}
	return pgx.ConnectConfig(context.Background(), cfg)
}

// worldEndpoint finds the us-east-1 endpoint of a database by identifier
// (or by its rdsproxy:name, for reporting).
func worldEndpoint(world *sandbox.World, name string) string {
	if name == "reporting" {
		name = "reporting-replica"
	}
	cluster, reader := strings.CutSuffix(name, "-ro") // a cluster's reader endpoint is cluster-ro-…, its writer's cluster-…
	for endpoint := range world.DialMap {
		host, _, _ := net.SplitHostPort(endpoint)
		if strings.HasPrefix(host, cluster+".") && strings.Contains(host, "."+sandbox.Region+".") &&
			strings.Contains(host, ".cluster-ro-") == reader {
			return endpoint
		}
	}
	return ""
}

func connectDiscovered(t *testing.T, world *sandbox.World, serverAddr, name string) *pgx.Conn {
	t.Helper()
	conn, err := dialDiscovered(world, serverAddr, name)
	if err != nil {
		t.Fatalf("connect to discovered target %s: %v", name, err)
	}
	return conn
}

func signWorldToken(endpoint string) (string, error) {
	tok, err := sb.tokens.cache.Get(context.Background(), endpoint, sandbox.Region, sandbox.UserIAM)
	if err == nil {
		sb.tokens.remember(tok)
	}
	return tok, err
}
