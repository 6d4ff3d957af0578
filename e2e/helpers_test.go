package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// connectLocal opens a pgx connection to a client proxy listener, with no
// password: the client proxy injects the token.
func connectLocal(t testing.TB, addr, user string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), localConfig(t, addr, user))
	if err != nil {
		t.Fatalf("connect through %s as %s: %v", addr, user, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func localConfig(t testing.TB, addr, user string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := newLocalConfig(addr, user)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newLocalConfig(addr, user string) (*pgx.ConnConfig, error) {
	host, port, _ := net.SplitHostPort(addr)
	cfg, err := pgx.ParseConfig("sslmode=disable connect_timeout=60")
	if err != nil {
		return nil, err
	}
	p, _ := strconv.Atoi(port)
	cfg.Host, cfg.Port, cfg.User, cfg.Database = host, uint16(p), user, "app"
	// Ctrl-C semantics: cancel the query on the server at once when the
	// context ends. The connection is given up only after cancelBound, so a
	// slow cancel fails a test on its bound, not as a timeout.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: cancelBound + 10*time.Second}
	}
	return cfg, nil
}

// serverConfig is a pgx config that talks to the server directly, as any
// PostgreSQL client holding a token can.
func serverConfig(t testing.TB, serverAddr, target, user, password string) *pgx.ConnConfig {
	t.Helper()
	cfg := localConfig(t, serverAddr, user)
	cfg.Password = password
	cfg.RuntimeParams["rdsproxy.target"] = target
	return cfg
}

// pgErr asserts err is a PostgreSQL error with code and a message
// containing want.
func pgErr(t testing.TB, err error, code, want string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v, want a PostgreSQL error %s", err, code)
	}
	if pe.Code != code || !strings.Contains(pe.Message, want) {
		t.Fatalf("error = %s %q, want %s containing %q", pe.Code, pe.Message, code, want)
	}
}

// psql runs the real psql against addr with no password and returns its
// combined output.
func psql(t testing.TB, ctx context.Context, addr, user string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, "psql", append([]string{"-X", "-v", "ON_ERROR_STOP=0", "-At"}, args...)...)
	cmd.Env = append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER="+user, "PGDATABASE=app",
		"PGPASSWORD=", "PGSSLMODE=prefer", "PGCONNECT_TIMEOUT=20")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func splitAddr(t testing.TB, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// superuser connects straight to PostgreSQL's app database over its unix socket.
func superuser(t testing.TB) *pgx.Conn {
	t.Helper()
	return superuserOf(t, sb.pg)
}

// superuserOf connects to pg's app database (where the targets live, and
// advisory locks are per database) as its superuser.
func superuserOf(t testing.TB, pg *sandbox.Postgres) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pg.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = sandbox.DatabaseApp
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// waitFor polls cond until it holds or timeout passes. It synchronises on
// observable state (never on a fixed sleep); the timeout only bounds a
// failing test.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGoroutines waits until the process runs at most as many goroutines
// as base; on timeout it fails naming the stacks that have more goroutines
// than in base.
func waitGoroutines(t testing.TB, base goroutines, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for now := takeGoroutines(); now.total > base.total; now = takeGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d goroutines, baseline %d; beyond the baseline:\n%s", timeout, now.total, base.total, now.beyond(base))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// goroutines is the process's goroutines counted by stack, leaving out the
// goroutine that counts them and pgx's background readers. pgx starts a
// reader when a write is slow, and the reader then waits in a read until
// its connection's next answer: on a loaded machine the sandbox's pooled
// connections (the RDS emulator's rds_iam checks) keep one each, idle,
// for as long as they live. They are test-side, and bounded by the pool.
type goroutines struct {
	total  int
	stacks map[string]int // by the stack's functions and lines, one a line
}

// takeGoroutines counts the process's goroutines by stack, from the
// goroutine profile's text form (groups of "N @ pcs" and "#" frame lines).
func takeGoroutines() goroutines {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	g := goroutines{stacks: map[string]int{}}
	for _, group := range strings.Split(b.String(), "\n\n") {
		n, stack := 0, ""
		for _, line := range strings.Split(group, "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[1] == "@":
				n, _ = strconv.Atoi(f[0])
			case len(f) >= 4 && f[0] == "#":
				stack += "\t" + f[2] + " " + f[3] + "\n"
			}
		}
		if n > 0 && !strings.Contains(stack, "runtime/pprof.") && !strings.Contains(stack, "pgconn/internal/bgreader.") {
			g.stacks[stack] += n
			g.total += n
		}
	}
	return g
}

// beyond lists the stacks that have more goroutines in g than in base.
func (g goroutines) beyond(base goroutines) string {
	var b strings.Builder
	for stack, n := range g.stacks {
		if extra := n - base.stacks[stack]; extra > 0 {
			fmt.Fprintf(&b, "%d more of:\n%s", extra, stack)
		}
	}
	return b.String()
}

func nowUTC() time.Time { return time.Now().UTC() }

// connectLocalErr is connectLocal for goroutines that cannot call t.Fatal.
func connectLocalErr(addr, user string) (*pgx.Conn, error) {
	cfg, err := newLocalConfig(addr, user)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(context.Background(), cfg)
}
