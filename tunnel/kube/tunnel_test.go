package kube_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/internal/leakcheck"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
)

// klog starts its flush daemon at init; nothing of ours.
var leakOpts = []goleak.Option{goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")}

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m, leakOpts...)
}

// Sixteen concurrent streams on one port-forward connection each move
// 2 MiB to the echo server and back, checksummed, on both transports.
func TestConcurrentTransfer(t *testing.T) {
	const streams, size = 16, 2 << 20
	for _, tt := range []struct {
		transport string
		refuseWS  bool
	}{
		{"websocket", false},
		{"spdy", true}, // websocket refused: SPDY fallback
	} {
		t.Run(tt.transport, func(t *testing.T) {
			echo := startEcho(t)
			cluster := startCluster(t, echo.Addr())
			cluster.RefuseWebsocket(tt.refuseWS)
			tun := newTunnel(t, baseConfig(t, cluster))
			start := time.Now()
			var g errgroup.Group
			for i := range streams {
				c := dial(t, tun)
				g.Go(func() error { return transfer(c, size, uint64(i)) })
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d streams x %d MiB each way in %s", streams, size>>20, time.Since(start).Round(time.Millisecond))
			up := cluster.Upgrades()
			if up[tt.transport] != 1 || len(up) != 1 {
				t.Fatalf("upgrades = %v, want one %s connection shared by all streams", up, tt.transport)
			}
			if got := echo.accepted.Load(); got != streams {
				t.Fatalf("echo server accepted %d connections, want %d", got, streams)
			}
		})
	}
}

// An error reported on one stream's error stream fails that stream only.
func TestStreamErrorIsolated(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	tun := newTunnel(t, baseConfig(t, cluster))
	var others []net.Conn
	for range 4 {
		c := dial(t, tun)
		if err := ping(c, "before"); err != nil {
			t.Fatal(err)
		}
		others = append(others, c)
	}
	victim := dial(t, tun)
	if err := cluster.FailLatestStream("error forwarding port 5432: injected failure"); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(victim)
	var se *kube.StreamError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "injected failure") {
		t.Fatalf("victim read error = %v, want the injected StreamError", err)
	}
	for i, c := range others {
		if err := ping(c, "after"); err != nil {
			t.Fatalf("stream %d broken by another stream's error: %v", i, err)
		}
	}
	// The pod is still fine: a new stream reuses the same connection.
	if err := transfer(dial(t, tun), 64<<10, 1); err != nil {
		t.Fatal(err)
	}
	if up := cluster.Upgrades(); up["websocket"] != 1 {
		t.Fatalf("upgrades = %v, want the one websocket connection reused", up)
	}
}

// A rollout replaces the pod; the next Dial finds the new pod without a
// new Tunnel. With the old connection dropped, its streams end; with it
// kept, they keep working.
func TestRolloutMovesToNewPod(t *testing.T) {
	for _, tt := range []struct {
		name string
		drop bool
	}{
		{"old connection dropped", true},
		{"old connection kept", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			oldEcho, newEcho := startEcho(t), startEcho(t)
			cluster := startCluster(t, oldEcho.Addr())
			tun := newTunnel(t, baseConfig(t, cluster))
			old := dial(t, tun)
			if err := ping(old, "old"); err != nil {
				t.Fatal(err)
			}
			oldPod := old.RemoteAddr().String()
			newPod := cluster.Rollout(newEcho.Addr(), tt.drop)
			if tt.drop {
				if _, err := io.ReadAll(old); err != nil && !errors.Is(err, kube.ErrStreamReset) {
					t.Fatalf("old stream read error = %v, want ErrStreamReset, ErrConnectionLost or EOF", err)
				}
			} else {
				// The kept connection's next stream fails ("pod not found")
				// and marks it suspect; the Dial after that re-resolves.
				c := dial(t, tun)
				if _, err := io.ReadAll(c); err == nil {
					t.Fatal("stream to the deleted pod ended without error")
				}
			}
			c := dial(t, tun)
			if got := c.RemoteAddr().String(); got != newPod {
				t.Fatalf("stream went to pod %s, want new pod %s (old %s)", got, newPod, oldPod)
			}
			if err := transfer(c, 256<<10, 2); err != nil {
				t.Fatal(err)
			}
			if newEcho.accepted.Load() != 1 {
				t.Fatalf("new pod's target accepted %d connections, want 1", newEcho.accepted.Load())
			}
			if !tt.drop {
				if err := ping(old, "old stream still alive"); err != nil {
					t.Fatalf("old stream on the kept connection: %v", err)
				}
			}
		})
	}
}

// When the port-forward connection drops, open streams end and the next
// Dial reconnects.
func TestConnectionDropReconnects(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	tun := newTunnel(t, baseConfig(t, cluster))
	c := dial(t, tun)
	if err := ping(c, "hello"); err != nil {
		t.Fatal(err)
	}
	cluster.DropConnections()
	// The stream ends: normally with a reset or lost-connection error,
	// rarely as EOF (see ErrStreamReset). What matters is the reconnect.
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, kube.ErrStreamReset) {
		t.Fatalf("read error = %v, want ErrStreamReset, ErrConnectionLost or EOF", err)
	}
	if err := transfer(dial(t, tun), 64<<10, 3); err != nil {
		t.Fatal(err)
	}
	if up := cluster.Upgrades(); up["websocket"] != 2 {
		t.Fatalf("upgrades = %v, want a second websocket connection", up)
	}
}

// RBAC that allows only one of the two port-forward verbs still works:
// "get" → websocket, "create" → SPDY fallback.
func TestPartialPortForwardRBAC(t *testing.T) {
	for _, tt := range []struct{ forbid, want string }{
		{"create", "websocket"},
		{"get", "spdy"},
	} {
		t.Run("forbid "+tt.forbid, func(t *testing.T) {
			echo := startEcho(t)
			cluster := startCluster(t, echo.Addr())
			cluster.Forbid(tt.forbid, "pods/portforward")
			tun := newTunnel(t, baseConfig(t, cluster))
			if err := transfer(dial(t, tun), 64<<10, 4); err != nil {
				t.Fatal(err)
			}
			if up := cluster.Upgrades(); up[tt.want] != 1 {
				t.Fatalf("upgrades = %v, want %s", up, tt.want)
			}
		})
	}
}

// Failures are sentences that say what to do, and classify with errors.Is.
func TestDialErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, cfg *kube.Config, c clusterSwitches)
		kind    error
		contain []string
	}{
		{"no ready pod", func(t *testing.T, cfg *kube.Config, c clusterSwitches) { c.SetReady(false) },
			kube.ErrNoReadyPod, []string{"no ready pod for deployment rdsproxy in namespace db", "Running, not ready"}},
		{"selector matches nothing", func(t *testing.T, cfg *kube.Config, c clusterSwitches) {
			cfg.Deployment, cfg.Selector = "", "app=other"
		}, kube.ErrNoReadyPod, []string{"no ready pod for selector app=other", "no pod matches"}},
		{"forbidden get deployments", func(t *testing.T, cfg *kube.Config, c clusterSwitches) { c.Forbid("get", "deployments") },
			kube.ErrForbidden, []string{`grant RBAC verb "get" on "deployments"`, "namespace db"}},
		{"forbidden list pods", func(t *testing.T, cfg *kube.Config, c clusterSwitches) { c.Forbid("list", "pods") },
			kube.ErrForbidden, []string{`grant RBAC verb "list" on "pods"`}},
		{"forbidden port-forward", func(t *testing.T, cfg *kube.Config, c clusterSwitches) {
			c.Forbid("get", "pods/portforward")
			c.Forbid("create", "pods/portforward")
		}, kube.ErrForbidden, []string{`grant RBAC verbs "get" and "create" on "pods/portforward"`}},
		{"wrong token", func(t *testing.T, cfg *kube.Config, c clusterSwitches) { cfg.RESTConfig.BearerToken = "wrong" },
			kube.ErrUnauthorized, []string{"rejected the credentials (401)"}},
		{"API server hangs", func(t *testing.T, cfg *kube.Config, c clusterSwitches) {
			cfg.RESTConfig.Host = "https://" + blackhole(t)
			cfg.DialTimeout = 300 * time.Millisecond
		}, kube.ErrUnreachable, []string{"unreachable within 300ms"}},
		{"API server port closed", func(t *testing.T, cfg *kube.Config, c clusterSwitches) {
			cfg.RESTConfig.Host = "https://" + closedPort(t)
			cfg.DialTimeout = 2 * time.Second
		}, kube.ErrUnreachable, []string{"unreachable within 2s", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo := startEcho(t)
			cluster := startCluster(t, echo.Addr())
			cfg := baseConfig(t, cluster)
			tt.setup(t, &cfg, cluster)
			tun := newTunnel(t, cfg)
			start := time.Now()
			c, err := tun.Dial(t.Context())
			elapsed := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, tt.kind) {
				t.Fatalf("Dial error %q is not %v", err, tt.kind)
			}
			for _, s := range tt.contain {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Dial error %q does not say %q", err, s)
				}
			}
			// Generous bound, for a loaded machine: the deadline, not a 30 s
			// library timeout, ended it.
			if limit := cfg.DialTimeout + 15*time.Second; elapsed > limit {
				t.Errorf("Dial took %s, want within %s", elapsed, limit)
			}
			t.Logf("error after %s: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

// The dial deadline covers the port-forward upgrade on both transports
// (client-go sets none), so a hanging API server fails the Dial in time.
func TestUpgradeDeadline(t *testing.T) {
	for _, tt := range []struct {
		name     string
		refuseWS bool
	}{
		{"websocket upgrade hangs", false},
		{"websocket refused, SPDY upgrade hangs", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			echo := startEcho(t)
			cluster := startCluster(t, echo.Addr())
			cluster.RefuseWebsocket(tt.refuseWS)
			cluster.HangPortForward(true)
			cfg := baseConfig(t, cluster)
			cfg.DialTimeout = 500 * time.Millisecond
			tun := newTunnel(t, cfg)
			start := time.Now()
			_, err := tun.Dial(t.Context())
			elapsed := time.Since(start)
			if !errors.Is(err, kube.ErrUnreachable) || !strings.Contains(err.Error(), "within 500ms") {
				t.Fatalf("Dial error = %v, want unreachable within 500ms", err)
			}
			if limit := cfg.DialTimeout + 15*time.Second; elapsed > limit {
				t.Fatalf("Dial took %s, want within %s", elapsed, limit)
			}
			t.Logf("error after %s: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

// A stream the pod side never accepts fails the Dial at the deadline
// (spdystream alone would wait 30 s or forever); the connection is kept
// and serves the next Dial.
func TestStreamCreationDeadline(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	cfg := baseConfig(t, cluster)
	cfg.DialTimeout = 5 * time.Second // room for a loaded machine; the failure is 30 s or forever
	tun := newTunnel(t, cfg)
	dial(t, tun).Close() // the connection is up: the held Dial waits only on its stream
	cluster.HoldStreams()
	_, err := tun.Dial(t.Context())
	if !errors.Is(err, kube.ErrUnreachable) || !strings.Contains(err.Error(), "did not accept a port-forward stream within 5s") {
		t.Fatalf("Dial error = %v, want the stream-acceptance timeout", err)
	}
	cluster.ReleaseStreams()
	if err := transfer(dial(t, tun), 64<<10, 6); err != nil {
		t.Fatal(err)
	}
	if up := cluster.Upgrades(); up["websocket"] != 1 {
		t.Fatalf("upgrades = %v, want the first connection kept", up)
	}
}

type clusterSwitches interface {
	SetReady(bool)
	Forbid(verb, resource string)
}

// A quiet stream honours read deadlines and stays usable afterwards.
func TestReadDeadline(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	tun := newTunnel(t, baseConfig(t, cluster))
	c := dial(t, tun)
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a quiet stream = %v, want os.ErrDeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Time{})
	if err := ping(c, "still here"); err != nil {
		t.Fatal(err)
	}
}

// The kubeconfig is loaded the standard way: explicit path or KUBECONFIG,
// context override, namespace from the context.
func TestKubeconfigLoading(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	path := filepath.Join(t.TempDir(), "config")
	if err := cluster.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  kube.Config
		env  string
	}{
		{"explicit path and context", kube.Config{Kubeconfig: path, Context: "fake"}, ""},
		{"KUBECONFIG", kube.Config{}, path},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			cfg := tt.cfg
			cfg.Deployment, cfg.Port, cfg.Logger = "rdsproxy", serverPort, testLogger(t)
			tun := newTunnel(t, cfg)
			if tun.Namespace() != "db" {
				t.Fatalf("namespace = %q, want the context's %q", tun.Namespace(), "db")
			}
			if err := transfer(dial(t, tun), 4<<10, 5); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// No kubeconfig anywhere: the error names where one is looked for and
// how to get one, not client-go's KUBERNETES_MASTER.
func TestNoKubeconfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	_, err := kube.New(t.Context(), kube.Config{Deployment: "rdsproxy", Port: serverPort, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config)") ||
		strings.Contains(err.Error(), "KUBERNETES_MASTER") {
		t.Fatalf("kube.New without a kubeconfig: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  kube.Config
	}{
		{"no deployment or selector", kube.Config{Port: 1}},
		{"both deployment and selector", kube.Config{Deployment: "d", Selector: "a=b", Port: 1}},
		{"no port", kube.Config{Deployment: "d"}},
		{"port too big", kube.Config{Deployment: "d", Port: 70000}},
		{"negative timeout", kube.Config{Deployment: "d", Port: 1, DialTimeout: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
		})
	}
}

// Close ends open streams and connections and leaves no goroutine behind,
// on either transport.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	for _, refuseWS := range []bool{false, true} {
		before := goleak.IgnoreCurrent()
		echo := startEcho(t)
		cluster := startCluster(t, echo.Addr())
		cluster.RefuseWebsocket(refuseWS)
		cfg := baseConfig(t, cluster)
		tun, err := kube.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for range 4 {
			c, err := tun.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := ping(c, "x"); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		conns[0].Close()
		if err := tun.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := conns[1].Read(make([]byte, 1)); err == nil {
			t.Fatal("stream readable after Tunnel.Close")
		}
		if _, err := tun.Dial(t.Context()); !errors.Is(err, kube.ErrClosed) {
			t.Fatalf("Dial after Close = %v, want ErrClosed", err)
		}
		cluster.Close()
		echo.close()
		leakcheck.VerifyNone(t, append(leakOpts, before)...)
	}
}
