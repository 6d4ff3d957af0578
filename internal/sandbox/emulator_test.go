package sandbox_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

const (
	appHost    = "app.c1sandbox.us-east-1.rds.amazonaws.com"
	appEP      = appHost + ":5432"
	otherHost  = "other.c1sandbox.us-east-1.rds.amazonaws.com"
	otherEP    = otherHost + ":5432"
	unservedEP = "nope.c1sandbox.us-east-1.rds.amazonaws.com:5432"
	euHost     = "orders.c1sandbox.eu-west-1.rds.amazonaws.com"
	euEP       = euHost + ":5432"
	euRegion   = "eu-west-1"
	pgSuper    = "postgres" // the sandbox PostgreSQL's superuser
)

// fixture is one PostgreSQL and one emulator impersonating two endpoints
// in us-east-1 and one in eu-west-1.
type fixture struct {
	pg  *sandbox.Postgres
	ca  *sandbox.CA
	emu *sandbox.Emulator
	log *testLogWriter // the emulators' log, kept for assertions
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pg := startPostgres(t)
	ca, err := sandbox.NewCA("emulator test CA")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{pg: pg, ca: ca, log: &testLogWriter{t: t}}
	f.emu = f.startEmulator(t, sandbox.EmulatorConfig{})
	return f
}

// startEmulator starts an emulator for the three test endpoints; cfg may
// set Cert or StartupTimeout.
func (f *fixture) startEmulator(t *testing.T, cfg sandbox.EmulatorConfig) *sandbox.Emulator {
	t.Helper()
	cfg.Postgres, cfg.CA, cfg.Endpoints = f.pg, f.ca, []string{appEP, otherEP, euEP}
	cfg.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	emu, err := sandbox.StartEmulator(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("StartEmulator: %v", err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("Emulator.Close: %v", err)
		}
	})
	return emu
}

// testLogWriter sends log lines to t.Log and keeps them for assertions.
// The emulator stops logging in Close, which runs in t.Cleanup, before the
// test completes.
type testLogWriter struct {
	mu  sync.Mutex
	t   *testing.T
	buf bytes.Buffer
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimSpace(string(p)))
	w.buf.Write(p)
	return len(p), nil
}

// take returns and clears what was logged so far.
func (w *testLogWriter) take() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.buf.String()
	w.buf.Reset()
	return s
}

func sign(t *testing.T, endpoint, user string, creds aws.Credentials, at time.Time, life time.Duration) string {
	t.Helper()
	tok, err := iamtoken.SignAt(context.Background(), endpoint, sandbox.Region, user, creds, at, life)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// specToken signs spec with the SDK presigner directly (sandbox.SignTestToken),
// for tokens whose signature is valid but which RDS refuses.
func specToken(t *testing.T, spec sandbox.TokenSpec) string {
	t.Helper()
	if spec.Endpoint == "" {
		spec.Endpoint = appEP
	}
	tok, err := sandbox.SignTestToken(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func freshToken(t *testing.T, user string) string {
	return sign(t, appEP, user, sandbox.Credentials(), time.Now(), 15*time.Minute)
}

// pgxConfig connects through the emulator with sslmode=verify-full for
// serverName (the RDS host), dialing the emulator's loopback address.
func (f *fixture) pgxConfig(t *testing.T, emu *sandbox.Emulator, serverName, user, password string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=verify-full&connect_timeout=10", user, emu.Addr(), sandbox.DatabaseApp))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	cfg.TLSConfig = &tls.Config{RootCAs: f.ca.Pool(), ServerName: serverName}
	cfg.Fallbacks = nil
	return cfg
}

func (f *fixture) connect(t *testing.T, user, token string) (*pgx.Conn, error) {
	return pgx.ConnectConfig(testCtx(t), f.pgxConfig(t, f.emu, appHost, user, token))
}

func TestEmulatorAcceptsValidTokens(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	for _, user := range []string{sandbox.UserIAM, sandbox.UserIAMOther} {
		t.Run(user, func(t *testing.T) {
			conn, err := f.connect(t, user, freshToken(t, user))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer conn.Close(ctx)
			var who, db string
			if err := conn.QueryRow(ctx, `SELECT current_user, current_database()`).Scan(&who, &db); err != nil {
				t.Fatal(err)
			}
			if who != user || db != sandbox.DatabaseApp {
				t.Fatalf("current_user, current_database() = %s, %s; want %s, %s", who, db, user, sandbox.DatabaseApp)
			}
			if _, err := conn.Exec(ctx, `CREATE TABLE t_`+user+` (id int)`); err != nil {
				t.Fatalf("create table: %v", err)
			}
		})
	}
	t.Run("sdk BuildAuthToken and application_name", func(t *testing.T) {
		tok, err := iamtoken.Build(ctx, appEP, sandbox.Region, sandbox.UserIAM, aws.CredentialsProviderFunc(
			func(context.Context) (aws.Credentials, error) { return sandbox.Credentials(), nil }))
		if err != nil {
			t.Fatal(err)
		}
		cfg := f.pgxConfig(t, f.emu, appHost, sandbox.UserIAM, tok)
		cfg.RuntimeParams["application_name"] = "emu-test"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		var app string
		if err := conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app); err != nil || app != "emu-test" {
			t.Fatalf("application_name = %q, %v; want the client's startup parameter", app, err)
		}
	})
}

func TestEmulatorRejects(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	creds := sandbox.Credentials()
	wrongSecret := creds
	wrongSecret.SecretAccessKey = "not-the-sandbox-secret"
	unknownKey := creds
	unknownKey.AccessKeyID = "AKIAUNKNOWNEXAMPLE00"
	good := freshToken(t, sandbox.UserIAM)
	tampered := strings.Replace(good, "X-Amz-Expires=900", "X-Amz-Expires=600", 1) // within the cap: only the signature can tell
	flipped := good[:len(good)-1] + map[bool]string{true: "1", false: "0"}[good[len(good)-1] == '0']
	eu := func() string {
		tok, err := iamtoken.SignAt(context.Background(), appEP, "eu-west-1", sandbox.UserIAM, creds, now, 15*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}()

	tests := []struct {
		name, user, token string
		reason            string // logged at Debug; the client sees only RDS's text
	}{
		{"expired", sandbox.UserIAM, sign(t, appEP, sandbox.UserIAM, creds, now.Add(-20*time.Minute), 15*time.Minute), "token expired 5m"},
		{"seven-day lifetime signed a day ago", sandbox.UserIAM,
			specToken(t, sandbox.TokenSpec{User: sandbox.UserIAM, At: now.Add(-24 * time.Hour), Expires: "604800"}),
			`X-Amz-Expires \"604800\" is not 1 to 900 seconds`},
		{"lifetime 901 s", sandbox.UserIAM, specToken(t, sandbox.TokenSpec{User: sandbox.UserIAM, Expires: "901"}),
			`X-Amz-Expires \"901\" is not 1 to 900 seconds`},
		{"action not connect", sandbox.UserIAM, specToken(t, sandbox.TokenSpec{User: sandbox.UserIAM, Action: "Connect"}),
			`token action is \"Connect\", not connect`},
		{"service not rds-db", sandbox.UserIAM, specToken(t, sandbox.TokenSpec{User: sandbox.UserIAM, Service: "rds"}),
			"token is for service rds, not rds-db"},
		{"user twice", sandbox.UserIAM, specToken(t, sandbox.TokenSpec{User: sandbox.UserIAM, Extra: url.Values{"DBUser": {sandbox.UserIAMOther}}}),
			"token repeats query parameter DBUser"},
		{"future", sandbox.UserIAM, sign(t, appEP, sandbox.UserIAM, creds, now.Add(10*time.Minute), 15*time.Minute), "in the future"},
		{"token for other endpoint than SNI", sandbox.UserIAM, sign(t, otherEP, sandbox.UserIAM, creds, now, 15*time.Minute),
			"token host " + otherHost + " differs from the TLS server name " + appHost},
		{"token for unserved endpoint", sandbox.UserIAM, sign(t, unservedEP, sandbox.UserIAM, creds, now, 15*time.Minute),
			"token endpoint " + unservedEP + " is not one this emulator serves"},
		{"token for other user", sandbox.UserIAM, freshToken(t, sandbox.UserIAMOther), `token is for DB user \"iam_other\"`},
		{"wrong region", sandbox.UserIAM, eu, "token is for region eu-west-1"},
		{"wrong secret", sandbox.UserIAM, sign(t, appEP, sandbox.UserIAM, wrongSecret, now, 15*time.Minute), "sigv4: signature does not match"},
		{"unknown access key", sandbox.UserIAM, sign(t, appEP, sandbox.UserIAM, unknownKey, now, 15*time.Minute), "sigv4: unknown access key id"},
		{"tampered expiry", sandbox.UserIAM, tampered, "sigv4: signature does not match"},
		{"flipped signature", sandbox.UserIAM, flipped, "sigv4: signature does not match"},
		{"user not in rds_iam", sandbox.UserNoIAM, freshToken(t, sandbox.UserNoIAM), "is not a member of rds_iam"},
		// pg_has_role says every superuser is a member of every role; RDS
		// has no superuser, and IAM needs rds_iam granted.
		{"superuser not granted rds_iam", pgSuper, freshToken(t, pgSuper), "is not a member of rds_iam"},
		{"unknown role", "ghost", freshToken(t, "ghost"), "is not a member of rds_iam"},
		{"garbage", sandbox.UserIAM, "not-a-token", "token is not an RDS presigned URL"},
		{"empty", sandbox.UserIAM, "", "token is not an RDS presigned URL"},
		{"password of pw_user", sandbox.UserPassword, sandbox.PasswordOfPW, "token is not an RDS presigned URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.log.take()
			_, err := f.connect(t, tt.user, tt.token)
			wantPgError(t, err, "28P01", fmt.Sprintf(`PAM authentication failed for user "%s"`, tt.user))
			logged := f.log.take()
			if !strings.Contains(logged, tt.reason) {
				t.Errorf("emulator log lacks reason %q:\n%s", tt.reason, logged)
			}
			if tt.token != "" && strings.Contains(logged, tt.token) {
				t.Errorf("emulator logged the token")
			}
		})
	}
	t.Run("valid token still accepted", func(t *testing.T) {
		conn, err := f.connect(t, sandbox.UserIAM, good)
		if err != nil {
			t.Fatalf("connect with the untampered token: %v", err)
		}
		conn.Close(testCtx(t))
	})
}

func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("error = %v, want a PostgreSQL error %s", err, code)
	}
	if pgErr.Severity != "FATAL" || pgErr.Code != code || pgErr.Message != msg {
		t.Fatalf("error = %s %s %q, want FATAL %s %q", pgErr.Severity, pgErr.Code, pgErr.Message, code, msg)
	}
}

// TestEmulatorEndpointRegion checks that a token must be signed for the
// region of the endpoint the client reached, as RDS checks it: an eu-west-1
// endpoint takes eu-west-1 tokens and refuses us-east-1 ones, and the
// reverse.
func TestEmulatorEndpointRegion(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	creds, now := sandbox.Credentials(), time.Now()
	signIn := func(endpoint, region string) string {
		tok, err := iamtoken.SignAt(ctx, endpoint, region, sandbox.UserIAM, creds, now, 15*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t.Run("eu-west-1 token at the eu-west-1 endpoint", func(t *testing.T) {
		conn, err := pgx.ConnectConfig(ctx, f.pgxConfig(t, f.emu, euHost, sandbox.UserIAM, signIn(euEP, euRegion)))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		var who string
		if err := conn.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != sandbox.UserIAM {
			t.Fatalf("current_user = %q, %v; want %s", who, err, sandbox.UserIAM)
		}
	})
	for _, tt := range []struct {
		name, serverName, endpoint, region, reason string
	}{
		{"us-east-1 token at the eu-west-1 endpoint", euHost, euEP, sandbox.Region, "token is for region us-east-1, not eu-west-1"},
		{"eu-west-1 token at a us-east-1 endpoint", appHost, appEP, euRegion, "token is for region eu-west-1, not us-east-1"},
		{"eu-west-1 token for the eu-west-1 endpoint at a us-east-1 one", appHost, euEP, euRegion,
			"token host " + euHost + " differs from the TLS server name " + appHost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f.log.take()
			_, err := pgx.ConnectConfig(ctx, f.pgxConfig(t, f.emu, tt.serverName, sandbox.UserIAM, signIn(tt.endpoint, tt.region)))
			wantPgError(t, err, "28P01", fmt.Sprintf(`PAM authentication failed for user "%s"`, sandbox.UserIAM))
			if logged := f.log.take(); !strings.Contains(logged, tt.reason) {
				t.Errorf("emulator log lacks reason %q:\n%s", tt.reason, logged)
			}
		})
	}
}

func TestEmulatorPlaintextRefused(t *testing.T) {
	f := newFixture(t)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", sandbox.UserIAM, f.emu.Addr(), sandbox.DatabaseApp))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = freshToken(t, sandbox.UserIAM)
	_, err = pgx.ConnectConfig(testCtx(t), cfg)
	wantPgError(t, err, "28000", fmt.Sprintf(`no pg_hba.conf entry for host "127.0.0.1", user "%s", database "%s", no encryption`,
		sandbox.UserIAM, sandbox.DatabaseApp))
}

// TestEmulatorGSSENCRequest sends GSSENCRequest by hand: the emulator must
// answer 'N' and then treat the next packet normally.
func TestEmulatorGSSENCRequest(t *testing.T) {
	f := newFixture(t)
	c := dialEmulator(t, f.emu)
	writeStartupCode(t, c, 80877104)
	answer := make([]byte, 1)
	if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'N' {
		t.Fatalf("GSSENCRequest answer = %q, %v; want N", answer, err)
	}
	var sm bytes.Buffer
	sm.Write([]byte{0, 0, 0, 0, 0, 3, 0, 0})
	sm.WriteString("user\x00u\x00database\x00d\x00\x00")
	b := sm.Bytes()
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if resp[0] != 'E' || !bytes.Contains(resp, []byte(`no pg_hba.conf entry for host "127.0.0.1", user "u", database "d", no encryption`)) {
		t.Fatalf("response after GSSENCRequest = %q, want the no-encryption ErrorResponse", resp)
	}
}

func TestEmulatorOversizedStartupClosed(t *testing.T) {
	f := newFixture(t)
	c := dialEmulator(t, f.emu)
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], 20000)
	binary.BigEndian.PutUint32(hdr[4:], 196608)
	if _, err := c.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	// Closing with the packet's tail unread makes the kernel reset the
	// connection; either way nothing may be answered.
	if n, err := io.Copy(io.Discard, c); n != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after an oversized startup packet read %d bytes, err %v; want a close without response", n, err)
	}
}

func TestEmulatorWrongCertificate(t *testing.T) {
	f := newFixture(t)
	wrong, err := f.ca.Issue("somewhere.else.example")
	if err != nil {
		t.Fatal(err)
	}
	emu := f.startEmulator(t, sandbox.EmulatorConfig{Cert: &wrong})
	_, err = pgx.ConnectConfig(testCtx(t), f.pgxConfig(t, emu, appHost, sandbox.UserIAM, freshToken(t, sandbox.UserIAM)))
	var hostErr x509.HostnameError
	if err == nil || !errors.As(err, &hostErr) {
		t.Fatalf("connect to an emulator with a certificate for another host: %v, want a hostname verification error", err)
	}
}

// TestEmulatorStartupTimeout checks a client that sends nothing is closed.
func TestEmulatorStartupTimeout(t *testing.T) {
	f := newFixture(t)
	emu := f.startEmulator(t, sandbox.EmulatorConfig{StartupTimeout: 200 * time.Millisecond})
	c := dialEmulator(t, emu) // its own read deadline is 20s
	if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
		t.Fatalf("silent client: read %d bytes, err %v; want the emulator to close it", n, err)
	}
}

func dialEmulator(t *testing.T, emu *sandbox.Emulator) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", emu.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeStartupCode(t *testing.T, w io.Writer, code uint32) {
	t.Helper()
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], 8)
	binary.BigEndian.PutUint32(b[4:], code)
	if _, err := w.Write(b[:]); err != nil {
		t.Fatal(err)
	}
}

func TestEmulatorPsql(t *testing.T) {
	f := newFixture(t)
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Fatalf("psql not installed: %v", err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := f.ca.WriteCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(f.emu.Addr())
	tests := []struct {
		name string
		env  []string
	}{
		{"verify-ca by address", []string{"PGHOST=" + host, "PGSSLMODE=verify-ca"}},
		{"verify-full by RDS name with hostaddr", []string{"PGHOST=" + appHost, "PGHOSTADDR=" + host, "PGSSLMODE=verify-full"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(testCtx(t), psql, "-X", "-At", "-c", "SELECT current_user || ' ' || current_database()")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "PGPORT=" + port, "PGUSER=" + sandbox.UserIAM,
				"PGDATABASE=" + sandbox.DatabaseApp, "PGSSLROOTCERT=" + caFile, "PGPASSWORD=" + freshToken(t, sandbox.UserIAM),
				"PGCONNECT_TIMEOUT=10"}, tt.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			if got, want := strings.TrimSpace(string(out)), sandbox.UserIAM+" "+sandbox.DatabaseApp; got != want {
				t.Fatalf("psql printed %q, want %q", got, want)
			}
		})
	}
}
