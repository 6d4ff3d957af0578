package e2e

import (
	"context"
	"net"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// pgx cancels a running pg_sleep(60) through both hops (CancelRequest over
// a new tunnel stream, then to the upstream), and the session stays usable.
func TestPgxCancelThroughBothHops(t *testing.T) {
	st := startStack(t)
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	cancelWhileRunning(t, conn, "SELECT pg_sleep(60) /* both hops */")
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("session unusable after cancel: %v", err)
	}
}

// Ctrl-C in psql cancels the running statement through both hops. (psql
// stops a non-interactive run after a cancel; the pgx test above shows the
// session stays usable.)
func TestPsqlCtrlCThroughBothHops(t *testing.T) {
	st := startStack(t)
	t.Logf("psql finished %v after Ctrl-C", psqlCtrlC(t, st.local["app"]))
}

// statementRunning reports whether a statement starting with prefix is active on
// PostgreSQL.
func statementRunning(t testing.TB, prefix string) bool {
	conn := superuser(t)
	defer conn.Close(context.Background())
	var n int
	err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, $1)", prefix).Scan(&n)
	return err == nil && n > 0
}

// cancelWhileRunning runs stmt on conn, ends its context once PostgreSQL
// runs it (pgx then sends a CancelRequest), and fails unless the statement
// returns 57014 within cancelBound. Cancelling on a timer instead would
// race the statement: on a loaded machine or a lossy tunnel a cancel can
// overtake the query, and PostgreSQL ignores a cancel for an idle session.
// stmt must be unique to the test (a comment does).
func cancelWhileRunning(t *testing.T, conn *pgx.Conn, stmt string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, stmt)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !statementRunning(t, stmt) {
		select {
		case err := <-done:
			t.Fatalf("%s ended before its cancel: %v", stmt, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done // before the test's cleanup closes conn
			t.Fatalf("%s was not running after 30 s", stmt)
		}
	}
	started := time.Now()
	cancel()
	err := <-done
	took := time.Since(started)
	t.Logf("the statement returned %v after the context ended: %v", took, err)
	pgErr(t, err, "57014", "canceling statement due to user request")
	if took > cancelBound {
		t.Fatalf("the cancel took %v, want within %v", took, cancelBound)
	}
}

// A client that goes away in the middle of a statement (a killed process,
// a lost network, rdsproxy connect stopped) has that statement cancelled.
// With PostgreSQL's default client_connection_check_interval (0, also
// RDS's default; the suite's database sets 1s) the backend would
// otherwise run it to its end, a pg_sleep(61) here, a long UPDATE holding
// its locks in life, before noticing the closed socket. A client that
// says goodbye (Terminate) costs no cancel.
func TestOrphanedStatementCancelled(t *testing.T) {
	reg := prometheus.NewRegistry()
	audit := &logBuffer{}
	st := startStack(t, func(c *server.Config) { c.Metrics, c.Logger = server.NewMetrics(reg), audit.jsonLogger() })
	orphaned := func() float64 {
		return counterValue(t, reg, "rdsproxy_cancel_requests_total", "result", "orphaned")
	}
	polite := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if err := polite.Close(context.Background()); err != nil { // sends Terminate
		t.Fatal(err)
	}
	host, port := splitAddr(t, st.local["app"])
	killPsqlMidStatement(t, orphaned, "PGHOST="+host, "PGPORT="+port, "PGUSER="+sandbox.UserIAM, "PGDATABASE=app", "PGSSLMODE=disable")
	// The audit says which session's statement was cancelled, and only that one.
	lines := waitAuditLines(t, audit, 2)
	for i, want := range []any{nil, true} {
		if got := lines[i]["orphan_cancel"]; got != want {
			t.Errorf("audit line %d: orphan_cancel %v, want %v: %v", i, got, want, lines[i])
		}
	}
}

// The same when neither hop uses TLS: a plaintext client straight to the
// server, and a static target with tls: disable. Both of the server's
// connections are then TCP, which the relay would splice, and it used to:
// the server saw no tail and sent no cancel.
func TestOrphanedStatementCancelledPlaintext(t *testing.T) {
	reg := prometheus.NewRegistry()
	plain := discovery.Target{Name: "plaintext", Endpoint: "plaintext.sandbox.internal:5432",
		Auth: discovery.AuthPassthrough, TLS: discovery.TLSDisable, Database: sandbox.DatabaseApp, Source: "static"}
	st := startStack(t, withTargets(t, []discovery.Target{plain}, map[string]string{plain.Endpoint: sb.pg.Addr()}),
		func(c *server.Config) { c.Metrics = server.NewMetrics(reg) })
	orphaned := func() float64 {
		return counterValue(t, reg, "rdsproxy_cancel_requests_total", "result", "orphaned")
	}
	host, port := splitAddr(t, st.serverAddr)
	killPsqlMidStatement(t, orphaned, "PGHOST="+host, "PGPORT="+port, "PGUSER="+sandbox.UserPassword,
		"PGPASSWORD="+sandbox.PasswordOfPW, "PGDATABASE=app", "PGSSLMODE=disable", "PGOPTIONS=-c rdsproxy.target=plaintext")
}

// killPsqlMidStatement runs a psql (with env) whose statement sleeps,
// kills it mid-statement, and waits for the server to cancel the
// statement: orphaned counts the server's orphan cancels. psql, killed,
// sends no Terminate and no cancel of its own (pgx would send one when its
// socket breaks mid-query).
func killPsqlMidStatement(t *testing.T, orphaned func() float64, env ...string) {
	t.Helper()
	const stmt = "SET client_connection_check_interval = 0; SELECT pg_sleep(61)"
	cmd := exec.Command("psql", "-X", "-At", "-c", stmt)
	cmd.Env = append(cmd.Environ(), env...)
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	waitFor(t, 20*time.Second, "pg_sleep running", func() bool {
		select {
		case <-exited:
			t.Fatalf("psql exited before its statement ran: %s", out.String())
		default:
		}
		return statementRunning(t, stmt)
	})
	if got := orphaned(); got != 0 {
		t.Fatalf("%v orphan cancels before any client left without a goodbye", got)
	}
	cmd.Process.Kill()
	<-exited
	waitFor(t, 20*time.Second, "the orphaned statement cancelled", func() bool {
		return !statementRunning(t, stmt) && orphaned() > 0 // counted once PostgreSQL closed the cancel's connection
	})
	if got := orphaned(); got != 1 {
		t.Fatalf("rdsproxy_cancel_requests_total{result=\"orphaned\"} = %v, want 1", got)
	}
}

// A session that an I/O error ends (here a client's reset, straight to the
// server) is audited and counted as aborted, not ok. Its backend was idle
// (it had answered the ping), so no cancel is sent for it: one would be
// ignored, and a drain of many idle sessions would dial as many.
func TestAbortedSessionAudited(t *testing.T) {
	reg := prometheus.NewRegistry()
	audit := &logBuffer{}
	st := startStack(t, func(c *server.Config) { c.Metrics, c.Logger = server.NewMetrics(reg), audit.jsonLogger() })
	cfg := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	var raw *net.TCPConn
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		raw, _ = c.(*net.TCPConn)
		return c, err
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw.SetLinger(0)
	raw.Close() // a reset
	lines := waitAuditLines(t, audit, 1)
	if lines[0]["outcome"] != "aborted" || lines[0]["err"] == nil {
		t.Fatalf("audit line %v, want outcome aborted with the error", lines[0])
	}
	if got := counterValue(t, reg, "rdsproxy_sessions_total", "outcome", "aborted"); got != 1 {
		t.Fatalf("rdsproxy_sessions_total{outcome=\"aborted\"} = %v, want 1", got)
	}
	if got := counterValue(t, reg, "rdsproxy_cancel_requests_total", "result", "orphaned"); got != 0 || lines[0]["orphan_cancel"] != nil {
		t.Fatalf("%v orphan cancels (audit %v) for a client that vanished while its backend was idle", got, lines[0]["orphan_cancel"])
	}
}

// Cancelling a large result that the client takes slowly, as the SSM
// agent does (about 1 MB/s), ends it within what the client's own socket
// and the server's unsent limit hold. The server drops the rows that the
// database sent before its cancel error, instead of making the client
// take the megabytes queued upstream first: psql's Ctrl-C over SSM took
// 4-6 s for them. The audit line and a counter say how much was dropped.
func TestCancelSkipsRowsQueuedForASlowClient(t *testing.T) {
	audit, reg := &logBuffer{}, prometheus.NewRegistry()
	st := startStack(t, func(c *server.Config) { c.Logger, c.Metrics = audit.jsonLogger(), server.NewMetrics(reg) })
	cfg := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	var read atomic.Int64 // bytes the session's connection has read
	sessions := 0
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: smallReceiveBuffer}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil || sessions > 0 { // the second is the cancel's
			return c, err
		}
		sessions++
		return &pacedReader{Conn: c, read: &read}, nil
	}
	conn, err := pgconn.ConnectConfig(context.Background(), &cfg.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rr := conn.ExecParams(context.Background(), "SELECT repeat('x', 1000) FROM generate_series(1, 200000)", nil, nil, nil, nil)
	cancelledAt := int64(-1)
	for rr.NextRow() {
		if cancelledAt < 0 && read.Load() > 2<<20 {
			if err := conn.CancelRequest(context.Background()); err != nil {
				t.Fatal(err)
			}
			cancelledAt = read.Load()
		}
	}
	_, err = rr.Close()
	pgErr(t, err, "57014", "canceling statement due to user request")
	after := read.Load() - cancelledAt
	t.Logf("the client read %d KiB after the cancel", after>>10)
	if after > 1<<20 {
		t.Fatalf("the client read %d KiB after the cancel; want under 1 MiB: what its socket and the server's unsent limit hold", after>>10)
	}
	conn.Close(context.Background())
	line := waitAuditLines(t, audit, 1)[0]
	dropped, _ := line["dropped_after_cancel"].(float64)
	if dropped <= 0 {
		t.Fatalf("audit line %v; want dropped_after_cancel, the bytes the client did not get", line)
	}
	t.Logf("the server dropped %.0f KiB", dropped/1024)
	if got := counterValue(t, reg, "rdsproxy_dropped_after_cancel_bytes_total"); got != dropped {
		t.Errorf("rdsproxy_dropped_after_cancel_bytes_total = %v; want the audit's %v", got, dropped)
	}
}

// pacedReader reads at most 8 KiB a millisecond, and counts what it reads.
type pacedReader struct {
	net.Conn
	read *atomic.Int64
}

func (c *pacedReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n, err := c.Conn.Read(p[:min(len(p), 8<<10)])
	c.read.Add(int64(n))
	return n, err
}

// smallReceiveBuffer keeps a connection's receive buffer at 64 KiB, so
// that what the peer has sent and the reader not yet read stays small.
func smallReceiveBuffer(_, _ string, rc syscall.RawConn) error {
	var err error
	rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
	return err
}

// A cancel for a session whose database has answered everything is
// counted apart (forwarded-idle): PostgreSQL ignores it, as a cursor read
// in pieces over a slow link meets between its pieces. A cancel during a
// statement counts as forwarded.
func TestCancelOfAnIdleSessionCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := startStack(t, func(c *server.Config) { c.Metrics = server.NewMetrics(reg) })
	count := func(result string) float64 {
		return counterValue(t, reg, "rdsproxy_cancel_requests_total", "result", result)
	}
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if err := conn.PgConn().CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the idle cancel counted", func() bool { return count("forwarded-idle") == 1 })
	cancelWhileRunning(t, conn, "SELECT pg_sleep(60) /* idle cancel counted */")
	waitFor(t, 20*time.Second, "the statement's cancel counted", func() bool { return count("forwarded") == 1 })
	if idle := count("forwarded-idle"); idle != 1 {
		t.Errorf("forwarded-idle %v after a statement's cancel; want still 1", idle)
	}
}
