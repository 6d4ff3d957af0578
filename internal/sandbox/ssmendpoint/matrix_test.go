package ssmendpoint_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
)

// The conformance matrix: one list of checks that a Session Manager client
// must pass against the agent-faithful endpoint, run with the real
// session-manager-plugin (plugin_test.go) and with the project's client
// (client_matrix_test.go). psql talks to the sandbox PostgreSQL through the
// client's local port; the endpoint's agent dials PostgreSQL.

const (
	matrixTarget = "i-0123456789abcdef0"
	rowBytes     = 1025
)

var (
	pgOnce sync.Once
	pg     *sandbox.Postgres
	pgDir  string
	pgErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pg != nil {
		pg.Close()
	}
	if pgDir != "" {
		os.RemoveAll(pgDir)
	}
	os.Exit(code)
}

// postgres starts the sandbox PostgreSQL once for the test binary.
func postgres(t *testing.T) *sandbox.Postgres {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL and psql")
	}
	pgOnce.Do(func() {
		if pgDir, pgErr = os.MkdirTemp("", "ssm-matrix-"); pgErr != nil {
			return
		}
		pg, pgErr = sandbox.StartPostgres(context.Background(), pgDir, nil)
	})
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pg
}

// matrixEndpoint is a strict endpoint whose agent dials PostgreSQL.
func matrixEndpoint(t *testing.T, cfg ssmendpoint.Config) *ssmendpoint.Endpoint {
	t.Helper()
	cfg.Targets = []string{matrixTarget}
	cfg.Strict = true
	if cfg.ResumeGrace == 0 {
		cfg.ResumeGrace = time.Minute
	}
	e, err := ssmendpoint.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		if v := e.Violations(); len(v) > 0 {
			t.Errorf("protocol violations: %q", v)
		}
	})
	return e
}

func apiClient(e *ssmendpoint.Endpoint) *awsssm.Client {
	return awsssm.New(awsssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(ssmendpoint.DefaultAccessKeyID, ssmendpoint.DefaultSecretAccessKey, "")})
}

// psqlCmd is psql as pw_user on database app at addr.
func psqlCmd(ctx context.Context, addr string, args ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, "psql", append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-At"}, args...)...)
	cmd.Env = append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER="+sandbox.UserPassword, "PGDATABASE="+sandbox.DatabaseApp,
		"PGPASSWORD="+sandbox.PasswordOfPW, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=30")
	return cmd
}

// superPsql runs psql as the superuser on database app over PostgreSQL's
// unix socket.
func superPsql(t *testing.T, sql string, stdout io.Writer) {
	t.Helper()
	dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", pg.SocketDir, pg.Port, sandbox.DatabaseApp)
	cmd := exec.CommandContext(t.Context(), "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", dsn, "-c", sql)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("psql on the socket: %v: %s", err, stderr.String())
	}
}

func query(t *testing.T, addr, sql string) string {
	t.Helper()
	out, err := psqlCmd(t.Context(), addr, "-c", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// rowsSQL yields mb MiB of text rows of rowBytes bytes (with the newline).
func rowsSQL(mb int, seed string) string {
	return fmt.Sprintf("select repeat(md5(g::text || '%s'), 32) from generate_series(1, %d) g", seed, mb<<20/rowBytes)
}

// hashWriter hashes and counts what it is given; reached is closed once
// more than at bytes went through.
type hashWriter struct {
	mu      sync.Mutex
	sum     hash.Hash
	n       int64
	at      int64
	reached chan struct{}
}

func newHashWriter(at int64) *hashWriter {
	return &hashWriter{sum: sha256.New(), at: at, reached: make(chan struct{})}
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sum.Write(p)
	before := w.n
	w.n += int64(len(p))
	if before <= w.at && w.n > w.at {
		close(w.reached)
	}
	return len(p), nil
}

func (w *hashWriter) hex() string { return hex.EncodeToString(w.sum.Sum(nil)) }

// copyOut runs a COPY … TO STDOUT through addr, hashing what arrives.
func copyOut(ctx context.Context, addr, sql string, w io.Writer) error {
	cmd := psqlCmd(ctx, addr, "-c", `\copy (`+sql+`) to stdout`)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("copy out: %w: %s", err, stderr.String())
	}
	return nil
}

// directHash is the checksum of sql's COPY output read over the socket.
func directHash(t *testing.T, sql string) string {
	t.Helper()
	w := newHashWriter(-1)
	superPsql(t, `\copy (`+sql+`) to stdout`, w)
	return w.hex()
}

// matrixOptions are what the two clients differ in.
type matrixOptions struct {
	addr   string // the client's local port
	copyMB int    // COPY size each way
	// cut drops the websocket; the client must resume the session.
	cut func()
}

// runMatrix is the shared part: a query, COPY out and in (checksummed), two concurrent streams, a psql cancel, and a websocket cut
// in the middle of a COPY.
func runMatrix(t *testing.T, e *ssmendpoint.Endpoint, o matrixOptions) {
	t.Run("query", func(t *testing.T) {
		if got := query(t, o.addr, "select 40 + 2"); got != "42" {
			t.Fatalf("select 40 + 2 = %q", got)
		}
	})
	table := fmt.Sprintf("matrix_in_%d", time.Now().UnixNano())
	dir := t.TempDir()
	t.Run("copy out and in", func(t *testing.T) {
		sql := rowsSQL(o.copyMB, table)
		want := directHash(t, sql)
		file := filepath.Join(dir, "rows.txt")
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		w := newHashWriter(-1)
		err = copyOut(t.Context(), o.addr, sql, &hashTee{w, f})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if w.hex() != want || w.n < int64(o.copyMB)<<20-rowBytes {
			t.Fatalf("COPY out: %d bytes, sha256 %s, want %s", w.n, w.hex(), want)
		}
		query(t, o.addr, "create table "+table+" (id bigserial primary key, line text)")
		if out, err := psqlCmd(t.Context(), o.addr, "-c", `\copy `+table+`(line) from '`+file+`'`).CombinedOutput(); err != nil {
			t.Fatalf("COPY in: %v: %s", err, out)
		}
		if got := directHash(t, "select line from "+table+" order by id"); got != want {
			t.Fatalf("COPY in: the table holds sha256 %s, want %s", got, want)
		}
	})
	t.Run("two concurrent streams", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sql := rowsSQL(4, fmt.Sprint("stream", i))
				w := newHashWriter(-1)
				if err := copyOut(t.Context(), o.addr, sql, w); err != nil {
					errs <- err
					return
				}
				if want := directHash(t, sql); w.hex() != want {
					errs <- fmt.Errorf("stream %d: sha256 %s, want %s", i, w.hex(), want)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("cancel", func(t *testing.T) { psqlCancel(t, o.addr) })
	t.Run("websocket cut mid-COPY, ResumeSession", func(t *testing.T) {
		before := e.Stats()
		sql := rowsSQL(8, "cut")
		w := newHashWriter(1 << 20)
		done := make(chan error, 1)
		go func() { done <- copyOut(t.Context(), o.addr, sql, w) }()
		select {
		case <-w.reached:
		case err := <-done:
			t.Fatalf("COPY ended before the cut: %v", err)
		}
		o.cut()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if want := directHash(t, sql); w.hex() != want {
			t.Fatalf("after the cut: sha256 %s, want %s (bytes lost or duplicated)", w.hex(), want)
		}
		after := e.Stats()
		if after.ResumeCalls == before.ResumeCalls || after.Reconnects == before.Reconnects || after.SessionsStarted != before.SessionsStarted {
			t.Errorf("before %+v\nafter %+v: want a ResumeSession and a reconnect, no new session", before, after)
		}
	})
}

type hashTee struct {
	h *hashWriter
	f io.Writer
}

func (t *hashTee) Write(p []byte) (int, error) {
	if _, err := t.f.Write(p); err != nil {
		return 0, err
	}
	return t.h.Write(p)
}

// psqlCancel runs a long query in psql, waits until PostgreSQL runs it,
// and interrupts psql: psql's CancelRequest travels over a new connection
// through the tunnel and PostgreSQL cancels the query.
func psqlCancel(t *testing.T, addr string) {
	marker := fmt.Sprintf("cancel_me_%d", time.Now().UnixNano())
	cmd := psqlCmd(t.Context(), addr, "-c", "select pg_sleep(120) as "+marker)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	running := func() bool {
		var b bytes.Buffer
		superPsql(t, "select count(*) from pg_stat_activity where state = 'active' and query like '%"+marker+"%' and pid <> pg_backend_pid()", &b)
		return strings.TrimSpace(b.String()) == "1"
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !running() {
		select {
		case err := <-exited:
			t.Fatalf("psql ended before its query ran: %v: %s", err, out.String())
		case <-tick.C:
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	if err == nil || !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Fatalf("psql after Ctrl-C: %v: %s", err, out.String())
	}
}

// readLines calls fn with each line of r until fn returns true.
func readLines(r io.Reader, fn func(string) bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if fn(sc.Text()) {
			return
		}
	}
}
