package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// driver is a real PostgreSQL driver run as its own program (in
// e2e/drivers) against what rdsproxy connect printed.
type driver struct {
	name    string
	jdbc    bool                                                                // takes the printed JDBC URL, not the DSN
	checks  []string                                                            // the "ok NAME" lines a passing run prints
	command func(ctx context.Context, t *testing.T, url, user string) *exec.Cmd // url: the printed DSN or JDBC URL
}

// The drivers' checks, each against the real server, client and database:
//   - connect: no password, as the IAM user, with the printed string, over
//     TLS exactly when the string asks for verify-full;
//   - types: parameters of several types through the driver's own
//     protocol (libpq's text, asyncpg's binary, pgjdbc's and node's named
//     prepared statements);
//   - large-result: 200,000 rows (pgjdbc and asyncpg also through a
//     portal, in pieces);
//   - copy: COPY out and back in, compared;
//   - errors: a failed statement and a failed transaction leave the
//     connection usable;
//   - cancel: the driver's own cancel (a CancelRequest on a new connection)
//     of pg_sleep and of a streaming result (pgjdbc and asyncpg also of a
//     portal in the middle of its rows), whose rows the server sets aside
//     after the cancel: the driver gets 57014 (asyncpg, whose timeout
//     cancels, its TimeoutError) and the connection works at once;
//   - cancel-copy: the same for COPY out;
//   - notify: a NOTIFY reaches a LISTEN on another connection;
//   - pool: eight connections at once.
var drivers = []driver{
	{"psycopg2", false, []string{"connect", "types", "large-result", "copy", "errors", "cancel", "cancel-copy", "notify"},
		pythonDriver("psycopg2", "psycopg2_check.py")},
	{"asyncpg", false, []string{"connect", "types", "large-result", "copy", "errors", "cancel", "cancel-copy", "notify", "pool"},
		pythonDriver("asyncpg", "asyncpg_check.py")},
	{"pgjdbc", true, []string{"connect", "types", "large-result", "copy", "errors", "cancel", "cancel-copy", "notify"},
		jdbcDriver},
	{"node-postgres", false, []string{"connect", "types", "large-result", "copy", "errors", "cancel", "cancel-copy", "notify", "pool"},
		nodeDriver},
}

// The drivers applications are built on connect through rdsproxy connect
// with exactly what it printed: the DSN (psycopg2, asyncpg, node-postgres)
// or the JDBC URL (pgjdbc), from a connect with --local-tls
// (sslmode=verify-full and its CA) and from one without (sslmode=disable,
// the default). Each runs the checks listed above drivers, the first of
// which asserts that the driver's socket is TLS exactly when the string
// asks for verify-full.
func TestDrivers(t *testing.T) {
	if testing.Short() {
		t.Skip("the drivers take about a minute and a half; make test runs them")
	}
	st := startStack(t)
	printedTLS, printedPlain := printedFor(t, st, "--local-tls"), printedFor(t, st)
	for _, tc := range []struct {
		mode string
		p    printed
	}{{"verify-full", printedTLS}, {"disable", printedPlain}} {
		if !strings.Contains(tc.p.DSN, "sslmode="+tc.mode) || !strings.Contains(tc.p.JDBC, "sslmode="+tc.mode) {
			t.Fatalf("connect printed DSN %s and JDBC %s, want sslmode=%s", tc.p.DSN, tc.p.JDBC, tc.mode)
		}
		for _, d := range drivers {
			t.Run(d.name+"/"+tc.mode, func(t *testing.T) {
				url := tc.p.DSN
				if d.jdbc {
					url = tc.p.JDBC
				}
				runDriver(t, d, url)
			})
		}
	}
}

// printedFor runs `rdsproxy connect --json` for st's target app as the IAM
// user, in a state directory of its own, and returns what it printed.
func printedFor(t *testing.T, st *stack, flags ...string) printed {
	cmd := binaryPsql(t, st.serverAddr, "app") // for its environment and state directory
	cmd.Args = append([]string{cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "--json",
		"--user", sandbox.UserIAM, "app"}, flags...)
	return startConnect(t, cmd, 1)[0]
}

// runDriver runs d against url and fails unless it exits 0 having printed
// every check it should.
func runDriver(t *testing.T, d driver, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := d.command(ctx, t, url, sandbox.UserIAM).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after 3 minutes: %w", ctx.Err())
	}
	var passed []string
	for _, m := range regexp.MustCompile(`(?m)^ok (\S+)$`).FindAllStringSubmatch(string(out), -1) {
		passed = append(passed, m[1])
	}
	if err != nil || !slices.Equal(passed, d.checks) {
		t.Fatalf("%s: %v; passed %v of %v\n%s", d.name, err, passed, d.checks, out)
	}
}

func driverFile(t *testing.T, name string) string {
	path, err := filepath.Abs(filepath.Join("drivers", name))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// pythonDriver runs script with a python3 that has module: the first of
// python3 on PATH and the system's /usr/bin/python3 (where Debian's
// python3-psycopg2 and python3-asyncpg install) that imports it.
func pythonDriver(module, script string) func(ctx context.Context, t *testing.T, url, user string) *exec.Cmd {
	return func(ctx context.Context, t *testing.T, url, user string) *exec.Cmd {
		for _, python := range []string{"python3", "/usr/bin/python3"} {
			if exec.Command(python, "-c", "import "+module).Run() == nil {
				return exec.CommandContext(ctx, python, driverFile(t, script), url, user)
			}
		}
		t.Fatalf("no python3 imports %s: make test's check-tools installs python3-%s", module, module)
		return nil
	}
}

// pgjdbcJar is where Debian's libpostgresql-jdbc-java installs pgjdbc.
const pgjdbcJar = "/usr/share/java/postgresql.jar"

func jdbcDriver(ctx context.Context, t *testing.T, url, user string) *exec.Cmd {
	if _, err := os.Stat(pgjdbcJar); err != nil {
		t.Fatalf("pgjdbc: %v: make test's check-tools installs libpostgresql-jdbc-java", err)
	}
	return exec.CommandContext(ctx, "java", "-cp", pgjdbcJar, driverFile(t, "PgjdbcCheck.java"), url, user)
}

func nodeDriver(ctx context.Context, t *testing.T, url, user string) *exec.Cmd {
	dir := driverFile(t, "node")
	for _, pkg := range []string{"pg", "pg-copy-streams"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is not installed in %s: make test's check-tools runs npm ci there", pkg, dir)
		}
	}
	cmd := exec.CommandContext(ctx, "node", "check.js", url, user)
	cmd.Dir = dir
	return cmd
}
