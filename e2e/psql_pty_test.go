package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// A terminal's Ctrl-C during `rdsproxy psql` reaches rdsproxy and psql
// alike (one foreground process group). psql must cancel the running
// query and carry on; rdsproxy must neither die nor kill psql, and must
// exit with psql's status. Driven through a real pty, so the terminal's
// line discipline sends the signal, as it does for a user.
func TestBinaryPsqlCtrlCOnTerminal(t *testing.T) {
	st := startStack(t)
	cmd := binaryPsql(t, st.serverAddr, "app", "-X")
	term := startTerminal(t, cmd)
	prompt := regexp.MustCompile(`\w+=> $`)
	term.expect(t, prompt)
	term.send(t, "SELECT pg_sleep(30) AS pty_sleep;\r")
	waitFor(t, 20*time.Second, "pg_sleep running", func() bool { return running(t, "SELECT pg_sleep(30) AS pty_sleep%") })
	started := time.Now()
	term.send(t, "\x03")
	term.expectWithin(t, regexp.MustCompile(`canceling statement due to user request`), cancelBound)
	t.Logf("query cancelled %v after Ctrl-C", time.Since(started))
	term.expect(t, prompt)
	term.send(t, "SELECT 40 + 2 AS answer;\r")
	term.expect(t, regexp.MustCompile(`\b42\b`))
	term.expect(t, prompt)
	term.send(t, `\q`+"\r")
	if code := term.wait(t); code != 0 {
		t.Fatalf("rdsproxy psql exited %d after \\q, want 0; terminal:\n%s", code, term.output())
	}
}

// rdsproxy psql exits with psql's own status (3: a script failed under
// ON_ERROR_STOP).
func TestBinaryPsqlExitCode(t *testing.T) {
	st := startStack(t)
	script := filepath.Join(t.TempDir(), "fail.sql")
	if err := os.WriteFile(script, []byte("SELECT 1/0;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := binaryPsql(t, st.serverAddr, "app", "-X", "-v", "ON_ERROR_STOP=1", "-f", script)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("rdsproxy psql: %v, want exit status 3; output:\n%s", err, out)
	}
}

// binaryPsql is `rdsproxy psql --via direct` for target as the IAM user,
// with the sandbox identity and a private home and state directory.
func binaryPsql(t *testing.T, serverAddr, target string, psqlArgs ...string) *exec.Cmd {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	home := t.TempDir()
	args := append([]string{"psql", "--via", "direct", "--server", serverAddr, target, "--user", sandbox.UserIAM, "--"}, psqlArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "RDSPROXY_STATE_DIR="+home, "TERM=dumb", "PSQL_HISTORY=/dev/null")
	cmd.Env = append(cmd.Env, sandboxAWSEnv()...)
	return cmd
}

// sandboxAWSEnv is the AWS environment of a client that signs as the
// sandbox identity and reads no AWS file of the machine's.
func sandboxAWSEnv() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + sandbox.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + sandbox.SecretAccessKey,
		"AWS_REGION=" + sandbox.Region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
}

// running reports whether a backend is running a query LIKE pattern.
func running(t testing.TB, pattern string) bool {
	conn := superuser(t)
	defer conn.Close(context.Background())
	var n int
	err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", pattern).Scan(&n)
	return err == nil && n > 0
}

// terminal is a process on a pty, as its session leader with the pty as
// its controlling terminal; everything it writes is collected.
type terminal struct {
	cmd  *exec.Cmd
	pty  *os.File
	mu   sync.Mutex
	out  []byte
	seen int           // output before this offset has been matched
	more chan struct{} // signalled on each read
	eof  chan struct{} // closed when the pty reads no more
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done closes
}

func startTerminal(t *testing.T, cmd *exec.Cmd) *terminal {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{cmd: cmd, pty: f, more: make(chan struct{}, 1), eof: make(chan struct{}), done: make(chan struct{})}
	go term.read()
	go func() { term.err = cmd.Wait(); close(term.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-term.done
		f.Close()
		<-term.eof
	})
	return term
}

func (term *terminal) read() {
	defer close(term.eof)
	buf := make([]byte, 4096)
	for {
		n, err := term.pty.Read(buf)
		term.mu.Lock()
		term.out = append(term.out, buf[:n]...)
		term.mu.Unlock()
		select {
		case term.more <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (term *terminal) output() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return string(term.out)
}

func (term *terminal) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(term.pty, s); err != nil {
		t.Fatalf("write to the terminal: %v", err)
	}
}

// expect waits until output not yet matched matches re (a generous bound
// only fails a stuck test), and marks it matched.
func (term *terminal) expect(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	term.expectWithin(t, re, 30*time.Second)
}

// expectWithin is expect with a bound that the test asserts.
func (term *terminal) expectWithin(t *testing.T, re *regexp.Regexp, bound time.Duration) {
	t.Helper()
	timeout := time.After(bound)
	for {
		term.mu.Lock()
		loc := re.FindIndex(term.out[term.seen:])
		if loc != nil {
			term.seen += loc[1]
		}
		term.mu.Unlock()
		if loc != nil {
			return
		}
		select {
		case <-term.more:
		case <-term.eof:
			t.Fatalf("the terminal closed before %q (exit: %v); it showed:\n%s", re, term.exitErr(), term.output())
		case <-timeout:
			t.Fatalf("no %q on the terminal within %v; it showed:\n%s", re, bound, term.output())
		}
	}
}

func (term *terminal) exitErr() error {
	select {
	case <-term.done:
		return term.err
	default:
		return nil
	}
}

// wait returns the process's exit code.
func (term *terminal) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-term.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s later; the terminal showed:\n%s", term.output())
	}
	var exit *exec.ExitError
	if errors.As(term.err, &exit) {
		return exit.ExitCode()
	}
	if term.err != nil {
		t.Fatal(term.err)
	}
	return 0
}

// rdsproxy psql serves its psql on a Unix socket in a directory only the
// user can enter (no loopback TCP port another local user could borrow
// the session through), and removes it when psql exits.
func TestBinaryPsqlPrivateSocket(t *testing.T) {
	st := startStack(t)
	script := `\echo :HOST` + "\n" + `\! find "$PGHOST" -maxdepth 0 -perm 700` + "\n" + "SELECT current_user;\n"
	cmd := binaryPsql(t, st.serverAddr, "app", "-X", "-At")
	cmd.Stdin = strings.NewReader(script)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 3 || !filepath.IsAbs(lines[0]) || lines[1] != lines[0] || lines[2] != sandbox.UserIAM {
		t.Fatalf("rdsproxy psql: %v\n%s%s\nwant the socket directory twice (its mode is 700) and the user", err, out, stderr.String())
	}
	if _, err := os.Stat(lines[0]); !os.IsNotExist(err) {
		t.Errorf("socket directory %s left behind: %v", lines[0], err)
	}
}
