package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// replicaGuard bounds waits on a loaded machine; no test asserts on time.
const replicaGuard = 2 * time.Minute

// replicaClient is one `rdsproxy connect --via ssm` process reaching a
// server name with several instances, serving one target locally.
type replicaClient struct {
	cmd  *exec.Cmd
	addr string     // the target's local listener
	log  *logBuffer // its stderr: JSON log lines
	done chan struct{}
}

// startReplicaClient runs connect for target with the server found by its
// tag rdsproxy:server=server.
func startReplicaClient(t *testing.T, world *sandbox.World, server, target string) *replicaClient {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	rc := &replicaClient{log: &logBuffer{}, done: make(chan struct{})}
	// --port 0: not the target's rdsproxy:local-port (orders: 15432), which
	// anything else on the machine may hold, a developer's own connect too.
	rc.cmd = exec.Command(bin, "connect", "--via", "ssm", "--ssm-server", server, "--json", "--log-format", "json",
		"--user", sandbox.UserIAM, "--port", "0", target)
	rc.cmd.Env = append(os.Environ(), world.ClientEnv()...)
	rc.cmd.Env = append(rc.cmd.Env, "RDSPROXY_STATE_DIR="+state, "HOME="+state)
	rc.cmd.Stderr = rc.log
	stdout, err := rc.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rc.cmd.Wait(); close(rc.done) }()
	t.Cleanup(func() {
		rc.cmd.Process.Kill()
		<-rc.done
		if t.Failed() {
			t.Logf("client log:\n%s", rc.log.String())
		}
		sb.logs.Write([]byte(rc.log.String())) // for the token scan
	})
	lines := make(chan printed, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var p printed
			if json.Unmarshal(sc.Bytes(), &p) == nil && p.Port != 0 {
				lines <- p
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case p := <-lines:
		rc.addr = net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	case <-rc.done:
		t.Fatalf("connect exited early:\n%s", rc.log.String())
	case <-time.After(replicaGuard):
		t.Fatalf("connect printed nothing:\n%s", rc.log.String())
	}
	return rc
}

// running reports whether the client process is still the one started.
func (rc *replicaClient) running() bool {
	select {
	case <-rc.done:
		return false
	default:
		return true
	}
}

// logged reports whether the client logged msg with instance=id.
func (rc *replicaClient) logged(msg, id string) bool {
	for _, line := range strings.Split(rc.log.String(), "\n") {
		var rec struct{ Msg, Instance string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.Instance == id {
			return true
		}
	}
	return false
}

// connect opens a session through the client and says which instance
// carries it: the one whose agent accepted the new stream.
func (rc *replicaClient) connect(t *testing.T, world *sandbox.World, ids ...string) (*pgx.Conn, string) {
	t.Helper()
	before := streamsPer(world, ids)
	conn := connectLocal(t, rc.addr, sandbox.UserIAM)
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	var on []string
	for id, n := range streamsPer(world, ids) {
		for range n - before[id] {
			on = append(on, id)
		}
	}
	if len(on) != 1 {
		t.Fatalf("one connection opened streams on %v, want exactly one instance", on)
	}
	return conn, on[0]
}

func streamsPer(world *sandbox.World, ids []string) map[string]int64 {
	m := make(map[string]int64, len(ids))
	for _, id := range ids {
		m[id] = world.SSM.TargetStreams(id)
	}
	return m
}

// addInstance adds an instance tagged server whose agent forwards to s.
func addInstance(t *testing.T, world *sandbox.World, server string, s *binaryServer) string {
	t.Helper()
	id, err := world.AddServerInstance(context.Background(), server, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// worldSuperuser connects to the world's PostgreSQL as its superuser, in
// the targets' database (advisory locks are per database).
func worldSuperuser(t *testing.T, world *sandbox.World) *pgx.Conn {
	t.Helper()
	return superuserOf(t, world.Postgres)
}

// activeQueries counts the world's backends running a statement that
// contains marker.
func activeQueries(t *testing.T, world *sandbox.World, marker string) int {
	conn := worldSuperuser(t, world)
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()", marker).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// cancelOn cancels a running pg_sleep on conn (carried by instance id)
// through the client, wants it ended within cancelBound, and checks the
// session is still usable.
func cancelOn(t *testing.T, world *sandbox.World, conn *pgx.Conn, id string) {
	t.Helper()
	marker := fmt.Sprintf("cancel on %s %d", id, time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(60) /* "+marker+" */")
		errc <- err
	}()
	waitFor(t, replicaGuard, "pg_sleep running on "+id, func() bool {
		select {
		case err := <-errc:
			t.Fatalf("pg_sleep on %s ended before the cancel: %v", id, err)
		default:
		}
		return activeQueries(t, world, marker) == 1
	})
	cancel()
	select {
	case err := <-errc:
		pgErr(t, err, "57014", "canceling statement due to user request")
	case <-time.After(cancelBound):
		t.Fatalf("the cancel of a statement on %s did not end it within %v", id, cancelBound)
	}
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("session on %s unusable after the cancel: %v", id, err)
	}
}
