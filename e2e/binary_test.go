package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "rdsproxy-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rdsproxy")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/rdsproxy/rdsproxy").CombinedOutput()
	if err != nil {
		return "", errors.New(string(out))
	}
	return bin, nil
})

// binaryServer runs the real rdsproxy server on the world's moto.
type binaryServer struct {
	cmd               *exec.Cmd
	addr, admin, conf string
	log               *logBuffer
	done              chan struct{} // closed when the process has exited
	err               error         // its exit status, set before done closes
}

func startBinaryServer(t *testing.T, world *sandbox.World, extra ...string) *binaryServer {
	t.Helper()
	for try := 1; ; try++ {
		s, err := tryBinaryServer(t, world, extra...)
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
	}
}

// errPortTaken: a port that was free a moment ago (closedAddr) was taken
// by another process before the server could listen on it.
var errPortTaken = errors.New("a port the server was given was taken meanwhile")

// tryBinaryServer starts the server and waits until it is ready, or has
// exited (with its log), or 2 minutes have passed (a hang guard: a
// refresh that fails waits 1, 2, 4, 8… s before the next).
func tryBinaryServer(t *testing.T, world *sandbox.World, extra ...string) (*binaryServer, error) {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		return nil, fmt.Errorf("build: %v", err)
	}
	s := &binaryServer{addr: closedAddr(), admin: closedAddr(), conf: filepath.Join(t.TempDir(), "server.yaml"), log: &logBuffer{}, done: make(chan struct{})}
	if err := world.WriteServerConfig(s.conf, s.addr, s.admin); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, append([]string{"server", "--config", s.conf, "--log-level", "debug"}, extra...)...)
	s.cmd.Env = append(os.Environ(), world.ServerEnv()...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		sb.logs.Write([]byte(s.log.String())) // for the token scan
	})
	for deadline := time.Now().Add(2 * time.Minute); s.readyz() != http.StatusOK; time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			if strings.Contains(s.log.String(), "address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("the server exited before it was ready (%v):\n%s", s.err, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the server was not ready after 2 minutes (a hang guard):\n%s", s.log.String())
		}
	}
	return s, nil
}

func (s *binaryServer) readyz() int {
	resp, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// SIGTERM: readiness goes false at once; a session that ends within the
// drain time ends normally; one that does not gets 57P01 and its statement
// cancelled; exit status 0. The audit trail is kept whatever the log
// level: the server runs with --log-level warn.
func TestBinarySIGTERMDrain(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world, "--drain-timeout", "8s", "--log-level", "warn") // 1 s query, room for a loaded machine
	ctx := context.Background()
	short := connectDiscovered(t, world, s.addr, "orders")
	long := connectDiscovered(t, world, s.addr, "orders")
	shortDone := make(chan error, 1)
	go func() {
		_, err := short.Exec(ctx, "SELECT pg_sleep(1)")
		if err == nil {
			err = short.Close(ctx)
		}
		shortDone <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep running", func() bool { return sleepingIn(t, world, "pg_sleep(1)") })
	s.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 8*time.Second, "readiness false", func() bool { return s.readyz() == http.StatusServiceUnavailable })
	if err := <-shortDone; err != nil {
		t.Fatalf("a session finishing within the drain time failed: %v", err)
	}
	_, err := long.Exec(ctx, "SET client_connection_check_interval = 0; SELECT pg_sleep(30)")
	pgErr(t, err, "57P01", "server is shutting down")
	waitFor(t, 10*time.Second, "the drained session's statement cancelled", func() bool { return !sleepingIn(t, world, "pg_sleep(30)") })
	waitCleanExit(t, s, "the drain")
	logs := s.log.String()
	if !strings.Contains(logs, `msg="session end"`) || !strings.Contains(logs, "outcome=ok") || !strings.Contains(logs, "outcome=shutdown") ||
		strings.Contains(logs, "level=INFO msg=ready") {
		t.Fatalf("with --log-level warn, want the two sessions' audit lines and no other info line:\n%s", logs)
	}
}

// waitCleanExit waits up to 30 s for the server to exit with status 0
// after what ended it.
func waitCleanExit(t *testing.T, s *binaryServer, after string) {
	t.Helper()
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("server exit: %v\n%s", s.err, s.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not exit after %s", after)
	}
}

// A second SIGTERM during the drain ends it at once: the session still
// running gets 57P01 and its statement cancelled, long before the drain
// time (60 s here) is up, and the server exits 0. It used to be ignored,
// leaving SIGKILL, which sends neither.
func TestBinarySecondSignalEndsDrain(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world, "--drain-timeout", "60s")
	ctx := context.Background()
	long := connectDiscovered(t, world, s.addr, "orders")
	done := make(chan error, 1)
	go func() {
		_, err := long.Exec(ctx, "SET client_connection_check_interval = 0; SELECT pg_sleep(30)")
		done <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep running", func() bool { return sleepingIn(t, world, "pg_sleep(30)") })
	s.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 20*time.Second, "readiness false", func() bool { return s.readyz() == http.StatusServiceUnavailable })
	s.cmd.Process.Signal(syscall.SIGTERM)
	pgErr(t, <-done, "57P01", "server is shutting down")
	waitFor(t, 10*time.Second, "the statement cancelled", func() bool { return !sleepingIn(t, world, "pg_sleep(30)") })
	waitCleanExit(t, s, "the second signal")
	if want := "second signal: ending the drain now"; !strings.Contains(s.log.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, s.log.String())
	}
}

// SIGHUP with a changed deny rule: new connections follow it, running
// sessions continue. A changed setting that a reload does not apply
// (max-sessions) is named in a warning; it used to pass in silence.
func TestBinarySIGHUPReload(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	ctx := context.Background()
	running := connectDiscovered(t, world, s.addr, "reporting")
	defer running.Close(ctx)
	conf, err := os.ReadFile(s.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf = bytes.Replace(conf, []byte("- "+sandbox.WorldDeny), []byte("- "+sandbox.WorldDeny+"\n    - rdsproxy:read-only=true"), 1)
	conf = append(conf, "\nmax-sessions: 7\n"...)
	if err := os.WriteFile(s.conf, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "reload to deny reporting", func() bool {
		c, err := dialDiscovered(world, s.addr, "reporting")
		if err == nil {
			c.Close(ctx)
		}
		return err != nil
	})
	_, err = dialDiscovered(world, s.addr, "reporting")
	pgErr(t, err, "28000", `target "reporting" is not served`)
	time.Sleep(3 * time.Second) // with --revoke-sessions the server would end it within a second
	if err := running.Ping(ctx); err != nil {
		t.Fatalf("running session cut by the reload: %v", err)
	}
	connectDiscovered(t, world, s.addr, "orders").Close(ctx)
	if want := `msg="changed settings that a reload does not apply; they take effect after a restart" settings=[max-sessions]`; !strings.Contains(s.log.String(), want) {
		t.Errorf("the reload's log lacks %q:\n%s", want, s.log.String())
	}
}

// --revoke-sessions: a refresh that finds a running session no longer
// admitted ends it with 57P01 and why, at a message boundary, cancels its
// statement, and its audit line says revoked. A database withheld for its state (IAM
// authentication turned off) keeps its sessions, and other targets'
// sessions go on. Without the flag TestBinarySIGHUPReload's session runs on.
func TestBinaryRevokeSessions(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world, "--revoke-sessions")
	ctx := context.Background()
	orders := connectDiscovered(t, world, s.addr, "orders")
	reporting := connectDiscovered(t, world, s.addr, "reporting")
	analytics := connectDiscovered(t, world, s.addr, "analytics")
	defer analytics.Close(ctx)
	refresh := func(what string, change func() error) {
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		s.cmd.Process.Signal(syscall.SIGHUP) // a reload refreshes discovery at once
	}

	refresh("take IAM authentication off reporting", func() error {
		_, err := world.Moto.RDS(sandbox.Region).ModifyDBInstance(ctx, &rds.ModifyDBInstanceInput{
			DBInstanceIdentifier: aws.String("reporting-replica"), EnableIAMDatabaseAuthentication: aws.Bool(false), ApplyImmediately: aws.Bool(true)})
		return err
	})
	waitFor(t, 20*time.Second, "reporting withheld", func() bool {
		c, err := dialDiscovered(world, s.addr, "reporting")
		if err == nil {
			c.Close(ctx)
		}
		return err != nil
	})

	refresh("drop the user from orders' rdsproxy:users", func() error {
		return world.Moto.RetagDatabase(ctx, sandbox.Region, "orders", false, map[string]string{"rdsproxy:users": sandbox.UserIAMOther})
	})
	pgErr(t, pingUntilErr(t, orders), "57P01", `target "orders" no longer admits this session (its database user is no longer among the target's users)`)
	// The server checked every session against the snapshot that ended
	// orders', in which reporting is still withheld for its state.
	if err := reporting.Ping(ctx); err != nil {
		t.Fatalf("a session whose database is withheld for its state was cut: %v", err)
	}

	sleeping := make(chan error, 1)
	go func() {
		_, err := reporting.Exec(ctx, "SET client_connection_check_interval = 0; SELECT pg_sleep(30)")
		sleeping <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep running", func() bool { return sleepingIn(t, world, "pg_sleep(30)") })
	refresh("deny reporting by tag", func() error {
		return world.Moto.RetagDatabase(ctx, sandbox.Region, "reporting-replica", false, map[string]string{"env": "restricted"})
	})
	pgErr(t, <-sleeping, "57P01", `target "reporting" no longer admits this session (the tag rules no longer admit the target)`)
	waitFor(t, 10*time.Second, "the revoked session's statement cancelled", func() bool { return !sleepingIn(t, world, "pg_sleep(30)") })

	if err := analytics.Ping(ctx); err != nil {
		t.Fatalf("another target's session was cut: %v", err)
	}
	waitFor(t, 10*time.Second, "two revoked audit lines", func() bool { return strings.Count(s.log.String(), "outcome=revoked") == 2 })

	// The checks go on while the server drains (30 s by default): a
	// session revoked then hears why at once, not "shutting down" at the
	// drain's end, and the server exits as soon as it is gone.
	s.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the drain", func() bool { return s.readyz() == http.StatusServiceUnavailable })
	refresh("deny analytics by tag during the drain", func() error {
		return world.Moto.RetagDatabase(ctx, sandbox.Region, "analytics", true, map[string]string{"env": "restricted"})
	})
	pgErr(t, pingUntilErr(t, analytics), "57P01", `target "analytics" no longer admits this session (the tag rules no longer admit the target)`)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server still runs after its last session was revoked during the drain")
	}
	for why, want := range map[string]int{"its database user is no longer among the target's users": 1, "the tag rules no longer admit the target": 2} {
		if n := strings.Count(s.log.String(), `outcome=revoked reason="`+why+`"`); n != want {
			t.Errorf("%d revoked audit lines saying %q, want %d:\n%s", n, why, want, s.log.String())
		}
	}
	// The warning names the client, as the audit line does.
	if n := strings.Count(s.log.String(), `msg="ending a session its target no longer admits" remote=127.0.0.1:`); n != 3 {
		t.Errorf("%d revocation warnings naming the client's address, want 3:\n%s", n, s.log.String())
	}
}

// pingUntilErr pings c until a ping fails, for up to 20 s, and returns
// that error.
func pingUntilErr(t *testing.T, c *pgx.Conn) error {
	t.Helper()
	var err error
	waitFor(t, 20*time.Second, "the session to end", func() bool {
		err = c.Ping(context.Background())
		return err != nil
	})
	return err
}

func startTestWorld(t *testing.T) *sandbox.World {
	t.Helper()
	world, err := sandbox.StartWorld(context.Background(), t.TempDir(), nil, sb.logs.logger("world-emulator"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { world.Close() })
	return world
}

func sleepingIn(t *testing.T, world *sandbox.World, query string) bool {
	conn, err := pgx.Connect(context.Background(), world.Postgres.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()", query).Scan(&n)
	return err == nil && n > 0
}
