// Package e2e runs rdsproxy end to end on the local sandbox: a real
// PostgreSQL 15, the RDS IAM emulator in front of it, the server and the
// client proxies in process, and real psql and pgx clients.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// Sandbox endpoints: RDS-style host names the emulator's certificate covers.
const (
	appEndpoint     = "app.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	roEndpoint      = "ro.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	limitedEndpoint = "limited.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	// Not in the emulator's certificate: TLS must fail.
	badCertEndpoint = "badcert.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	downEndpoint    = "down.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	pgHost          = "pg.sandbox.internal"
)

// world is the sandbox every test shares: starting PostgreSQL is the
// expensive part, so it runs once per package.
type world struct {
	pg      *sandbox.Postgres
	emu     *sandbox.Emulator
	sts     *sandbox.STS // AWS STS for caller identity, with sandbox.STSPrincipals
	ca      *sandbox.CA
	logs    *logBuffer
	tokens  *recordingTokens
	targets []discovery.Target
	dials   map[string]string
}

var sb *world

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "rdsproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	w, cleanup, err := startWorld(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sandbox:", err)
		cleanup()
		return 1
	}
	sb = w
	code := m.Run()
	cleanup()
	if path := os.Getenv("RDSPROXY_E2E_LOG"); path != "" { // every component's lines, for a failure's story
		if err := os.WriteFile(path, []byte(w.logs.String()), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if leaked := w.tokens.foundIn(w.logs.String()); leaked != "" {
		fmt.Fprintf(os.Stderr, "FAIL: a log line contains an IAM token issued in this run: %.60s…\n", leaked)
		return 1
	}
	return code
}

func startWorld(ctx context.Context, dir string) (*world, func(), error) {
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	w := &world{logs: &logBuffer{}}
	pglog, _ := os.Create(dir + "/postgres.log")
	closers = append(closers, func() { pglog.Close() })
	pg, err := sandbox.StartPostgres(ctx, dir, pglog)
	if err != nil {
		return nil, cleanup, err
	}
	closers = append(closers, func() { pg.Close() })
	w.pg = pg
	// Like RDS with client_connection_check_interval set: a backend whose
	// client vanished ends within a second even in the middle of a query.
	if err := superuserExec(ctx, pg, "ALTER SYSTEM SET client_connection_check_interval = '1s'", "SELECT pg_reload_conf()"); err != nil {
		return nil, cleanup, err
	}
	// One CA signs PostgreSQL's and the emulator's certificates.
	ca := pg.CA()
	w.ca = ca
	emu, err := sandbox.StartEmulator(ctx, sandbox.EmulatorConfig{
		Postgres:    pg,
		CA:          ca,
		Endpoints:   []string{appEndpoint, roEndpoint, limitedEndpoint},
		Region:      sandbox.Region,
		Credentials: sandbox.PrincipalSecrets(), // the sandbox key and every STS principal's
		Logger:      w.logs.logger("emulator"),
	})
	if err != nil {
		return nil, cleanup, err
	}
	closers = append(closers, func() { emu.Close() })
	w.emu = emu
	sts, err := sandbox.StartSTS(ctx, sandbox.STSConfig{Logger: w.logs.logger("sts")})
	if err != nil {
		return nil, cleanup, err
	}
	closers = append(closers, func() { sts.Close() })
	w.sts = sts
	w.tokens = newRecordingTokens()
	w.targets, w.dials = sandboxTargets(emu.Addr(), pg)
	return w, cleanup, nil
}

func sandboxTargets(emuAddr string, pg *sandbox.Postgres) ([]discovery.Target, map[string]string) {
	iam := func(name, endpoint string) discovery.Target {
		return discovery.Target{Name: name, Endpoint: endpoint, Region: sandbox.Region,
			Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull, Database: sandbox.DatabaseApp, Source: "static"}
	}
	ro := iam("ro", roEndpoint)
	ro.ReadOnly = true
	limited := iam("limited", limitedEndpoint)
	limited.Users = []string{sandbox.UserIAMOther}
	pgEndpoint := fmt.Sprintf("%s:%d", pgHost, pg.Port)
	targets := []discovery.Target{
		iam("app", appEndpoint), ro, limited,
		iam("badcert", badCertEndpoint), iam("down", downEndpoint),
		{Name: "plain", Endpoint: pgEndpoint, Auth: discovery.AuthPassthrough, TLS: discovery.TLSVerifyFull,
			Database: sandbox.DatabaseApp, Source: "static"},
	}
	dials := map[string]string{
		appEndpoint: emuAddr, roEndpoint: emuAddr, limitedEndpoint: emuAddr, badCertEndpoint: emuAddr,
		downEndpoint: closedAddr(), pgEndpoint: pg.Addr(),
	}
	return targets, dials
}

func superuserExec(ctx context.Context, pg *sandbox.Postgres, stmts ...string) error {
	conn, err := pgx.Connect(ctx, pg.SuperuserDSN())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// closedAddr is a loopback address where nothing listens.
func closedAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// stack is one server and one client proxy per target, all in process.
type stack struct {
	srv        *server.Server
	serverAddr string
	local      map[string]string // target name → client listen address
	snap       *discovery.Snapshot
}

type stackOption func(*server.Config)

// startStack starts a server and client proxies that reach it directly;
// t.Cleanup stops them and waits until every goroutine they started has ended.
func startStack(t testing.TB, opts ...stackOption) *stack {
	t.Helper()
	return startStackVia(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, err := tunnel.NewDirect(serverAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return tun
	}, opts...)
}

// startStackVia is startStack with the client proxies reaching the server
// through the tunnel newTunnel makes.
func startStackVia(t testing.TB, newTunnel func(t testing.TB, serverAddr string) tunnel.Tunnel, opts ...stackOption) *stack {
	t.Helper()
	return startStackWith(t, newTunnel, nil, opts...)
}

// startStackWith is startStackVia with edit applied to each client
// proxy's configuration.
func startStackWith(t testing.TB, newTunnel func(t testing.TB, serverAddr string) tunnel.Tunnel, edit func(*client.Config), opts ...stackOption) *stack {
	t.Helper()
	snap, err := discovery.NewSnapshot(sb.targets, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := server.RootCAs(sb.ca.PEM())
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Targets:       fixedTargets{snap},
		DialOverrides: sb.dials,
		RootCAs:       roots,
		Logger:        sb.logs.logger("server"),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	st := &stack{srv: srv, serverAddr: serve(t, &wg, func(ln net.Listener) error { return srv.Serve(ctx, ln) }),
		local: map[string]string{}, snap: snap}
	tun := newTunnel(t, st.serverAddr)
	t.Cleanup(func() { tun.Close() })
	for _, target := range snap.Targets() {
		cfg := client.Config{Tunnel: tun, Target: target, Tokens: sb.tokens, Logger: sb.logs.logger("client")}
		if edit != nil {
			edit(&cfg)
		}
		p, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		st.local[target.Name] = serve(t, &wg, func(ln net.Listener) error { return p.Serve(ctx, ln) })
	}
	return st
}

func serve(t testing.TB, wg *sync.WaitGroup, run func(net.Listener) error) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := run(ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	return ln.Addr().String()
}

type fixedTargets struct{ snap *discovery.Snapshot }

func (f fixedTargets) Current() *discovery.Snapshot { return f.snap }

// recordingTokens signs tokens with the sandbox credentials through the
// production cache and remembers every token it hands out, so the log
// scan can prove none of them was logged.
type recordingTokens struct {
	cache *iamtoken.Cache
	mu    sync.Mutex
	seen  map[string]bool
}

func newRecordingTokens() *recordingTokens {
	r := &recordingTokens{seen: map[string]bool{}}
	creds := sandbox.Credentials()
	r.cache = iamtoken.NewCache(func(ctx context.Context, endpoint, region, user string) (string, error) {
		return iamtoken.SignAt(ctx, endpoint, region, user, creds, time.Now(), 15*time.Minute)
	}, time.Now)
	return r
}

func (r *recordingTokens) Get(ctx context.Context, endpoint, region, user string) (string, error) {
	tok, err := r.cache.Get(ctx, endpoint, region, user)
	if err == nil {
		r.remember(tok)
	}
	return tok, err
}

func (r *recordingTokens) remember(tok string) {
	r.mu.Lock()
	r.seen[tok] = true
	r.mu.Unlock()
}

// sign makes a token for tests that talk to the server without the client.
func (r *recordingTokens) sign(t testing.TB, endpoint, user string, at time.Time) string {
	t.Helper()
	tok, err := iamtoken.SignAt(context.Background(), endpoint, sandbox.Region, user, sandbox.Credentials(), at, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r.remember(tok)
	return tok
}

// foundIn returns a token that occurs in logs, or "". It looks for the
// signature, the part that makes a token usable.
func (r *recordingTokens) foundIn(logs string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for tok := range r.seen {
		_, sig, _ := strings.Cut(tok, "X-Amz-Signature=")
		if strings.Contains(logs, tok) || (len(sig) >= 32 && strings.Contains(logs, sig)) {
			return tok
		}
	}
	return ""
}

// logBuffer collects every log line of the run at debug level.
type logBuffer struct{ syncbuf.Buffer }

func (l *logBuffer) logger(component string) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Writer(l), &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", component)
}

// jsonLogger also tees into the run-wide buffer, so the token scan sees it.
func (l *logBuffer) jsonLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.MultiWriter(l, sb.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
