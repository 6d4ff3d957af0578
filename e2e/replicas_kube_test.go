package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
)

// kubeGuard bounds each wait of the replica tests: a hang guard for a
// loaded machine, never a timing assertion.
const kubeGuard = 90 * time.Second

// kubeReplicas is a fake cluster whose pods each forward to their own real
// rdsproxy server, and the real client (`rdsproxy connect --via kube`)
// serving one target through them.
type kubeReplicas struct {
	world   *sandbox.World
	api     *kubeapi.Server
	servers map[string]*binaryServer // pod → its server
	client  *exec.Cmd
	local   printed
}

// startKubeReplicas starts the world, one server per pod name it returns
// (two pods), the fake API server and the client.
func startKubeReplicas(t *testing.T, serverArgs ...string) *kubeReplicas {
	t.Helper()
	world := startTestWorld(t)
	a, b := startBinaryServer(t, world, serverArgs...), startBinaryServer(t, world, serverArgs...)
	api, err := kubeapi.Start(kubeapi.Config{Target: a.addr, Logger: sb.logs.logger("kubeapi")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	k := &kubeReplicas{world: world, api: api, servers: map[string]*binaryServer{api.Pods()[0]: a}}
	k.servers[api.AddPod(b.addr)] = b
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	_, port, _ := net.SplitHostPort(closedAddr()) // not the target's tagged port, which other tests use
	k.client = exec.Command(bin, "connect", "--json", "--via", "kube", "--kubeconfig", kubeconfig,
		"--kube-port", strconv.Itoa(kubeapi.DefaultPort), "--user", sandbox.UserIAM, "--port", port, "orders")
	k.client.Env = append(os.Environ(), world.ClientEnv()...)
	k.client.Env = append(k.client.Env, "RDSPROXY_STATE_DIR="+state, "HOME="+state)
	k.local = startConnect(t, k.client, 1)[0]
	return k
}

// addPod starts another server and a ready pod forwarding to it (the
// Deployment's surge pod in a rollout).
func (k *kubeReplicas) addPod(t *testing.T, serverArgs ...string) string {
	t.Helper()
	s := startBinaryServer(t, k.world, serverArgs...)
	name := k.api.AddPod(s.addr)
	k.servers[name] = s
	return name
}

// connect opens a connection through the client and returns the pod that
// carries it: the one whose stream count the connection raised.
func (k *kubeReplicas) connect(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	conn, opened := k.connectStreams(t)
	var pods []string
	for pod, n := range opened {
		for range n {
			pods = append(pods, pod)
		}
	}
	if len(pods) != 1 {
		t.Fatalf("one connection opened streams to %q, want exactly one pod", pods)
	}
	return conn, pods[0]
}

// connectStreams opens a connection through the client, checks that it
// answers, and returns how many streams it opened to each pod.
func (k *kubeReplicas) connectStreams(t *testing.T) (*pgx.Conn, map[string]int) {
	t.Helper()
	before := k.api.Streams()
	cfg := localConfig(t, net.JoinHostPort(k.local.Host, strconv.Itoa(k.local.Port)), k.local.User)
	cfg.Database = k.local.Database
	ctx, cancel := context.WithTimeout(context.Background(), kubeGuard)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect through the client: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("a new connection through the client does not answer: %v", err)
	}
	opened := map[string]int{}
	for pod, n := range k.api.Streams() {
		if n > before[pod] {
			opened[pod] = n - before[pod]
		}
	}
	return conn, opened
}

// cancelSleep runs pg_sleep on conn, cancels it through the client (a
// CancelRequest sent to every replica) and wants 57014 within cancelBound.
func (k *kubeReplicas) cancelSleep(t *testing.T, conn *pgx.Conn, pod string) {
	t.Helper()
	query := fmt.Sprintf("SELECT pg_sleep(120) -- %s", pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, query); done <- err }()
	waitFor(t, kubeGuard, "pg_sleep on "+pod, func() bool { return sleepingIn(t, k.world, pod) })
	cancel()
	select {
	case err := <-done:
		pgErr(t, err, "57014", "canceling statement due to user request")
	case <-time.After(cancelBound):
		t.Fatalf("cancel of a statement on pod %s did not return within %v", pod, cancelBound)
	}
}

// gatedReader passes the first `after` bytes of r, then waits for gate.
type gatedReader struct {
	r     io.Reader
	after int64
	read  int64
	gate  <-chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read >= g.after {
		<-g.gate
	} else if rest := g.after - g.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.read += int64(n)
	return n, err
}

// checksummedCopy copies size bytes in, stopping halfway until gate closes,
// copies the table back out and compares checksums, within ctx.
func checksummedCopy(ctx context.Context, conn *pgx.Conn, size int64, gate <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 5*kubeGuard)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS replica_copy; CREATE TABLE replica_copy (id bigint, payload text)"); err != nil {
		return err
	}
	sent := sha256.New()
	src := &gatedReader{r: io.TeeReader(newRowSource(size), sent), after: size / 2, gate: gate}
	if _, err := conn.PgConn().CopyFrom(ctx, src, "COPY replica_copy FROM STDIN"); err != nil {
		return fmt.Errorf("COPY in: %w", err)
	}
	back := sha256.New()
	if _, err := conn.PgConn().CopyTo(ctx, back, "COPY (SELECT * FROM replica_copy ORDER BY id) TO STDOUT"); err != nil {
		return fmt.Errorf("COPY out: %w", err)
	}
	if !bytes.Equal(sent.Sum(nil), back.Sum(nil)) {
		return fmt.Errorf("COPY out differs from COPY in")
	}
	return nil
}

// `rdsproxy connect --via kube` against a Deployment of two pods: new
// connections spread over both, and cancels work on both. Then a rollout
// replaces one pod the way Kubernetes does (a surge pod becomes ready, the
// old pod is marked for deletion and its server gets SIGTERM, drains and
// exits, the pod is gone) while a checksummed COPY runs on the other pod:
// the COPY completes intact, the running statement and the idle session
// on the drained pod end with 57P01, new connections succeed while it
// drains (one refused by it is opened again elsewhere) and after, one
// reaches the new pod and none the removed one, cancels work on the
// remaining and the new pod, and the client was never restarted.
func TestReplicasKubeRollout(t *testing.T) {
	drain := []string{"--drain-timeout", "3s"}
	k := startKubeReplicas(t, drain...)
	pods := k.api.Pods()
	oldPod, stayPod := pods[0], pods[1]

	onPod := map[string][]*pgx.Conn{}
	for range 4 {
		conn, pod := k.connect(t)
		onPod[pod] = append(onPod[pod], conn)
	}
	t.Logf("4 connections: %d on %s, %d on %s", len(onPod[oldPod]), oldPod, len(onPod[stayPod]), stayPod)
	if len(onPod[oldPod]) != 2 || len(onPod[stayPod]) != 2 {
		t.Fatalf("4 connections opened one after the other were not spread 2 and 2 over the pods: %v", k.api.Streams())
	}
	k.cancelSleep(t, onPod[oldPod][0], oldPod)
	k.cancelSleep(t, onPod[stayPod][0], stayPod)

	// A COPY on the pod that stays, held halfway until the rollout is over.
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	// A failing test ends the two statements below before the cleanups
	// close their connections (pgx connections are not safe to close
	// while another goroutine uses them).
	ctx, cancelStatements := context.WithCancel(context.Background())
	var statements sync.WaitGroup
	t.Cleanup(func() { cancelStatements(); release(); statements.Wait() })
	copied := make(chan error, 1)
	statements.Go(func() { copied <- checksummedCopy(ctx, onPod[stayPod][0], 16<<20, gate) })
	waitFor(t, kubeGuard, "COPY running", func() bool { return sleepingIn(t, k.world, "COPY replica_copy FROM") })

	// A statement running on the pod that goes.
	drained := make(chan error, 1)
	statements.Go(func() {
		_, err := onPod[oldPod][1].Exec(ctx, "SELECT pg_sleep(60) -- drained")
		drained <- err
	})
	waitFor(t, kubeGuard, "pg_sleep on the old pod", func() bool { return sleepingIn(t, k.world, "drained") })

	newPod := k.addPod(t, drain...)
	if err := k.api.Terminate(oldPod); err != nil {
		t.Fatal(err)
	}
	old := k.servers[oldPod]
	old.cmd.Process.Signal(syscall.SIGTERM) // the kubelet, at once (no preStop hook)

	// While it drains its port refuses. The client may still pick it for a
	// new connection until it lists the pods again; such a stream is
	// refused before any byte reached a server and is opened again on
	// another pod. Two connections (the second goes elsewhere than the
	// first) both succeed.
	waitFor(t, kubeGuard, "the old server draining", func() bool { return old.readyz() == http.StatusServiceUnavailable })
	for range 2 {
		_, opened := k.connectStreams(t)
		t.Logf("a connection during the drain opened streams %v", opened)
		if carriers := len(opened) - min(opened[oldPod], 1); carriers != 1 || opened[oldPod] > 1 {
			t.Fatalf("a connection during the drain opened streams %v; want one on a serving pod, at most one refused on %s", opened, oldPod)
		}
	}
	select {
	case err := <-drained:
		pgErr(t, err, "57P01", "server is shutting down")
	case <-time.After(kubeGuard):
		t.Fatal("the statement on the drained pod did not end")
	}
	select {
	case <-old.done:
	case <-time.After(kubeGuard):
		t.Fatal("the old pod's server did not exit after its drain")
	}
	// The idle connection on the old pod was ended by the drain as well.
	_, err := onPod[oldPod][0].Exec(context.Background(), "SELECT 1")
	pgErr(t, err, "57P01", "server is shutting down")
	if err := k.api.Remove(oldPod); err != nil {
		t.Fatal(err)
	}

	// New connections succeed, and once the client has listed the pods
	// again they reach the new pod; none goes to the removed one.
	streamsOnOld := k.api.Streams()[oldPod]
	deadline := time.Now().Add(kubeGuard)
	var onNew *pgx.Conn
	for onNew == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no new connection reached the new pod %s: %v", newPod, k.api.Streams())
		}
		conn, pod := k.connect(t)
		if err := conn.Ping(context.Background()); err != nil {
			t.Fatalf("new connection on %s after the rollout: %v", pod, err)
		}
		if pod == newPod {
			onNew = conn
		}
	}
	if n := k.api.Streams()[oldPod]; n != streamsOnOld {
		t.Errorf("%d streams went to the removed pod %s", n-streamsOnOld, oldPod)
	}
	k.cancelSleep(t, onNew, newPod)
	k.cancelSleep(t, onPod[stayPod][1], stayPod)

	release()
	select {
	case err := <-copied:
		if err != nil {
			t.Fatalf("the COPY on %s across the rollout: %v", stayPod, err)
		}
	case <-time.After(5 * kubeGuard):
		t.Fatal("the COPY did not finish")
	}
	if k.client.ProcessState != nil || k.client.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the client exited during the rollout")
	}
}
