package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// printed is one target's line of `rdsproxy connect --json`.
type printed struct {
	Target, Host, User, Psql, DSN, JDBC string
	Port                                int
	Database                            string `json:"database"`
}

// clientCmd runs the real rdsproxy client against the world's server
// through --via ssm, with its own state directory and no user config.
func clientCmd(t *testing.T, world *sandbox.World, s *binaryServer, stateDir string, args ...string) *exec.Cmd {
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.addr)
	cmd := exec.Command(bin, append([]string{args[0], "--via", "ssm", "--ssm-server", sandbox.WorldServer, "--ssm-port", port}, args[1:]...)...)
	cmd.Env = append(os.Environ(), world.ClientEnv()...)
	cmd.Env = append(cmd.Env, "RDSPROXY_STATE_DIR="+stateDir, "HOME="+stateDir)
	return cmd
}

// startConnect runs `rdsproxy connect --json` and returns what it printed
// for each target.
func startConnect(t *testing.T, cmd *exec.Cmd, n int) []printed {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr logBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); sb.logs.Write([]byte(stderr.String())) })
	lines := make(chan printed)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var p printed
			if json.Unmarshal(sc.Bytes(), &p) == nil {
				lines <- p
			}
		}
		close(lines)
	}()
	var out []printed
	for len(out) < n {
		select {
		case p, ok := <-lines:
			if !ok {
				t.Fatalf("connect exited early:\n%s", stderr.String())
			}
			out = append(out, p)
		case <-time.After(60 * time.Second):
			t.Fatalf("connect printed %d of %d targets:\n%s", len(out), n, stderr.String())
		}
	}
	return out
}

// Two targets served at once through one SSM tunnel, each answering on its
// printed port; the printed psql command, DSN and JDBC URL are each parsed
// back and used; ports are stable across restarts and never silently changed.
func TestConnectTwoTargetsOverOneSSMTunnel(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	state := t.TempDir()
	before := world.SSM.Stats().SessionsStarted
	cmd := clientCmd(t, world, s, state, "connect", "--json", "--user", sandbox.UserIAM, "orders", "reporting")
	got := startConnect(t, cmd, 2)
	for _, p := range got {
		usePrinted(t, p)
	}
	if started := world.SSM.Stats().SessionsStarted - before; started != 1 {
		t.Errorf("%d SSM sessions for two targets, want one tunnel", started)
	}
	// Connections open at the Ctrl-C hear why they end (57P01 naming
	// connect), not "server closed the connection unexpectedly": a busy
	// psql at once, an idle pgx at its next query.
	idle, err := pgx.Connect(context.Background(), got[0].DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close(context.Background())
	conninfo := strings.TrimSuffix(strings.TrimPrefix(got[1].Psql, `psql "`), `"`)
	busy := exec.Command("psql", "-X", "-At", conninfo, "-c", "SELECT pg_sleep(30)")
	busyOut := &logBuffer{}
	busy.Stdout, busy.Stderr = busyOut, busyOut
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "pg_sleep running", func() bool { return sleepingIn(t, world, "pg_sleep(30)") })
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("connect after Ctrl-C: %v", err)
	}
	const why = "terminating connection because rdsproxy connect is stopping"
	if err := busy.Wait(); err == nil || !strings.Contains(busyOut.String(), "FATAL:  rdsproxy: "+why) {
		t.Errorf("psql running a query at the Ctrl-C: %v\n%s", err, busyOut.String())
	}
	_, err = idle.Exec(context.Background(), "SELECT 1")
	pgErr(t, err, "57P01", why)
	waitFor(t, 10*time.Second, "TerminateSession", func() bool { return world.SSM.Stats().TerminateCalls > 0 })

	// Restarted, both targets come back on the same ports.
	again := startConnect(t, clientCmd(t, world, s, state, "connect", "--json", "orders", "reporting"), 2)
	for i := range got {
		if again[i].Port != got[i].Port {
			t.Errorf("%s moved from port %d to %d", got[i].Target, got[i].Port, again[i].Port)
		}
	}
}

// usePrinted connects with each printed form.
func usePrinted(t *testing.T, p printed) {
	t.Helper()
	ctx := context.Background()
	conninfo := strings.TrimSuffix(strings.TrimPrefix(p.Psql, `psql "`), `"`)
	out, err := exec.Command("psql", "-X", "-At", conninfo, "-c", "SELECT current_user").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != sandbox.UserIAM {
		t.Fatalf("%s: printed psql command: %v %s", p.Target, err, out)
	}
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatalf("%s: printed DSN %s: %v", p.Target, p.DSN, err)
	}
	conn.Close(ctx)
	u, err := url.Parse(strings.TrimPrefix(p.JDBC, "jdbc:"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "postgresql" || u.Hostname() != p.Host || u.Port() != strconv.Itoa(p.Port) ||
		u.Path != "/"+p.Database || u.Query().Get("user") != p.User || p.Database != sandbox.DatabaseApp {
		t.Fatalf("%s: JDBC URL %s does not match host %s port %d database %s user %s", p.Target, p.JDBC, p.Host, p.Port, p.Database, p.User)
	}
}

// A target's port that is busy is an error, never a silent change.
func TestConnectBusyPortIsAnError(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	ln, err := net.Listen("tcp", "127.0.0.1:15432") // orders' rdsproxy:local-port tag
	if err != nil {
		t.Skipf("port 15432 is taken on this machine: %v", err)
	}
	defer ln.Close()
	out, err := clientCmd(t, world, s, t.TempDir(), "connect", "orders").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "127.0.0.1:15432 (its rdsproxy:local-port tag), which is busy: free it or pass --port") {
		t.Fatalf("busy port: %v\n%s", err, out)
	}
}

// rdsproxy psql passes psql's exit code through and closes the tunnel.
// psql's session ends as it does on a direct connection: the server
// audits it ok, and rdsproxy says nothing of statements to cancel (it
// used to end the relay as psql exited, racing psql's goodbye).
func TestPsqlCommand(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	state := t.TempDir()
	cmd := clientCmd(t, world, s, state, "psql", "orders", "--", "-Atc", "SELECT current_user") // reaches psql as given
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != sandbox.UserIAM {
		t.Fatalf("rdsproxy psql: %v %q\n%s", err, out, stderr.String())
	}
	cmd = clientCmd(t, world, s, state, "psql", "orders", "--", "-c", "SELECT 1/0")
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("psql's exit code not passed through: %v", err)
	}
	if strings.Contains(stderr.String(), "stopped: ended open connections") {
		t.Errorf("rdsproxy psql ended psql's connection itself:\n%s", stderr.String())
	}
	ends := func() int { return strings.Count(s.log.String(), `msg="session end"`) }
	waitFor(t, 10*time.Second, "the server's two audit lines", func() bool { return ends() >= 2 })
	if n := strings.Count(s.log.String(), "outcome=ok"); n != 2 {
		t.Errorf("%d of 2 psql sessions audited ok:\n%s", n, s.log.String())
	}
	stats := world.SSM.Stats()
	if stats.TerminateCalls < stats.SessionsStarted {
		t.Errorf("sessions left open: %+v", stats)
	}
}

// With --local-tls, applications that insist on TLS connect: psql with the
// printed verify-full string, psql with sslmode=require, pgx with the
// printed DSN; the loopback hop is then really encrypted.
func TestConnectLocalTLS(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	state := t.TempDir()
	p := startConnect(t, clientCmd(t, world, s, state, "connect", "--json", "--local-tls", "--user", sandbox.UserIAM, "reporting"), 1)[0]
	if !strings.Contains(p.Psql, "sslmode=verify-full sslrootcert="+state) || !strings.Contains(p.DSN, "sslmode=verify-full") {
		t.Fatalf("printed strings do not ask for verified TLS: %s / %s", p.Psql, p.DSN)
	}
	usePrinted(t, p)
	verified := strings.TrimSuffix(strings.TrimPrefix(p.Psql, `psql "`), `"`)
	required := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=require", p.Port, p.User, p.Database)
	for _, conninfo := range []string{verified, required} {
		out, err := exec.Command("psql", "-X", conninfo, "-c", `\conninfo`).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SSL connection") {
			t.Errorf("psql %q: %v\n%s", conninfo, err, out)
		}
	}
}

// A client with a wrong secret key, or no region, hears that once, with
// the fix, instead of the SDK's error twice (a warning about "the ones in
// use" when none was, then the same error).
func TestClientAWSMisconfiguration(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world)
	tests := []struct {
		name, env, want string
	}{
		{"wrong secret key", "AWS_SECRET_ACCESS_KEY=wrong", "AWS refused the credentials ("},
		{"no region", "AWS_REGION=", "no AWS region is configured for the server's instance: pass --region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := clientCmd(t, world, s, t.TempDir(), "list")
			cmd.Env = append(cmd.Env, tt.env, "AWS_DEFAULT_REGION=", "AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("rdsproxy list: %v, want exit 1:\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) || strings.Contains(string(out), "keeping the ones in use") {
				t.Errorf("rdsproxy list said:\n%s\nwant once: %s", out, tt.want)
			}
		})
	}
}

// connect --user naming a user the target does not serve (limited serves
// only iam_other) still serves the target, and warns that the server will
// refuse the strings it printed.
func TestConnectWarnsOfAnUnservedUser(t *testing.T) {
	st := startStack(t)
	cmd := binaryPsql(t, st.serverAddr, "limited") // for its environment
	cmd.Args = []string{cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "--user", sandbox.UserIAM, "limited"}
	var out logBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	const warning = "the rdsproxy server will refuse the printed strings: the target does not serve this database user"
	const served = "limited → 127.0.0.1:"
	waitFor(t, 30*time.Second, "the warning and the target served", func() bool {
		return strings.Contains(out.String(), warning) && strings.Contains(out.String(), served)
	})
	if !strings.Contains(out.String(), "served="+sandbox.UserIAMOther) {
		t.Errorf("connect printed:\n%s\nwant the user the target serves", out.String())
	}
}

// connect --address beyond loopback warns once it listens there (anyone
// who reaches it logs in as you); an --address this machine does not have
// (192.0.2.1 is TEST-NET-1) gets its error and exit 1, with no warning
// about an address it never listened on.
func TestConnectAddressBeyondLoopback(t *testing.T) {
	st := startStack(t)
	const warning = "--address is not a loopback address"
	run := func(address string) *exec.Cmd {
		cmd := binaryPsql(t, st.serverAddr, "app") // for its environment
		cmd.Args = []string{cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "--user", sandbox.UserIAM,
			"--address", address, "--port", "0", "app"}
		return cmd
	}
	foreign, err := run("192.0.2.1").CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 || strings.Contains(string(foreign), warning) ||
		!strings.Contains(string(foreign), "--address 192.0.2.1 is not an address of this machine") {
		t.Errorf("--address 192.0.2.1: %v\n%s\nwant exit 1 with the address's error and no warning", err, foreign)
	}
	all := run("0.0.0.0")
	var out logBuffer
	all.Stdout, all.Stderr = &out, &out
	if err := all.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { all.Process.Kill(); all.Wait() })
	waitFor(t, 30*time.Second, "the warning and the target served", func() bool {
		return strings.Contains(out.String(), warning) && strings.Contains(out.String(), "app → 127.0.0.1:")
	})
}

// Closing connect's terminal (SIGHUP) stops it as Ctrl-C does: it exits 0
// and the connections it served hear why they end (57P01 naming
// connect), instead of the process dying on the spot.
func TestConnectStopsOnHangup(t *testing.T) {
	// A suite run under nohup would pass SIGHUP's "ignored" on to the
	// connect it starts, which then rightly ignores it (the next test).
	// While this process handles SIGHUP, a child starts with the default.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	st := startStack(t)
	cmd := binaryPsql(t, st.serverAddr, "app") // for its environment
	cmd.Args = []string{cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "--json", "--user", sandbox.UserIAM, "app"}
	p := startConnect(t, cmd, 1)[0]
	idle, err := pgx.Connect(context.Background(), p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close(context.Background())
	start := time.Now()
	cmd.Process.Signal(syscall.SIGHUP)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("connect after SIGHUP: %v, want exit status 0", err)
		}
	case <-time.After(time.Minute): // it stops within StopLimit (8 s) when it stops at all
		cmd.Process.Kill()
		t.Fatal("connect still runs a minute after SIGHUP")
	}
	t.Logf("connect stopped %v after SIGHUP", time.Since(start))
	_, err = idle.Exec(context.Background(), "SELECT 1")
	pgErr(t, err, "57P01", "terminating connection because rdsproxy connect is stopping")
}

// Under nohup (SIGHUP ignored from the start), connect keeps ignoring it:
// a closed terminal leaves it serving.
func TestConnectUnderNohupIgnoresHangup(t *testing.T) {
	nohup, err := exec.LookPath("nohup")
	if err != nil {
		t.Fatalf("nohup (coreutils): %v", err)
	}
	st := startStack(t)
	cmd := binaryPsql(t, st.serverAddr, "app") // for its environment
	cmd.Args = []string{nohup, cmd.Path, "connect", "--via", "direct", "--server", st.serverAddr, "--json", "--user", sandbox.UserIAM, "app"}
	cmd.Path = nohup
	p := startConnect(t, cmd, 1)[0]
	cmd.Process.Signal(syscall.SIGHUP) // nohup has exec'd rdsproxy: same process
	time.Sleep(500 * time.Millisecond) // a connect that stopped on it would have by now
	conn, err := pgx.Connect(context.Background(), p.DSN)
	if err != nil {
		t.Fatalf("connect under nohup after SIGHUP: %v", err)
	}
	conn.Close(context.Background())
}
