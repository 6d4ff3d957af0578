package sandbox_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// startPostgres starts a cluster for one test; its log is printed if the
// test fails.
func startPostgres(t *testing.T) *sandbox.Postgres {
	t.Helper()
	dir := t.TempDir()
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pg, err := sandbox.StartPostgres(ctx, dir, logFile)
	if err != nil {
		logFile.Close()
		b, _ := os.ReadFile(logFile.Name())
		t.Fatalf("StartPostgres: %v\nlog:\n%s", err, b)
	}
	t.Cleanup(func() {
		if err := pg.Close(); err != nil {
			t.Errorf("Postgres.Close: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("postgres log:\n%s", b)
		}
	})
	return pg
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartPostgres(t *testing.T) {
	pg := startPostgres(t)
	ctx := testCtx(t)

	t.Run("roles", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, pg.SuperuserDSN())
		if err != nil {
			t.Fatalf("connect as superuser: %v", err)
		}
		defer conn.Close(ctx)
		tests := []struct {
			user      string
			canLogin  bool
			iamMember bool
		}{
			{sandbox.RoleRDSIAM, false, false},
			{sandbox.UserIAM, true, true},
			{sandbox.UserIAMOther, true, true},
			{sandbox.UserNoIAM, true, false},
			{sandbox.UserPassword, true, false},
		}
		for _, tt := range tests {
			var login, member bool
			err := conn.QueryRow(ctx, `SELECT rolcanlogin, pg_has_role(rolname, $2, 'MEMBER') AND rolname <> $2
				FROM pg_roles WHERE rolname = $1`, tt.user, sandbox.RoleRDSIAM).Scan(&login, &member)
			if err != nil {
				t.Fatalf("role %s: %v", tt.user, err)
			}
			if login != tt.canLogin || member != tt.iamMember {
				t.Errorf("role %s: login=%v member=%v, want %v %v", tt.user, login, member, tt.canLogin, tt.iamMember)
			}
		}
	})

	t.Run("tcp tls scram and create table", func(t *testing.T) {
		cfg, err := pgx.ParseConfig("postgres://" + sandbox.UserPassword + "@" + pg.Addr() + "/" + sandbox.DatabaseApp + "?sslmode=verify-full")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = sandbox.PasswordOfPW
		cfg.TLSConfig = &tls.Config{RootCAs: pg.CA().Pool(), ServerName: "pg.sandbox.internal"}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect with password over verified TLS: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `CREATE TABLE pw_t (id int)`); err != nil {
			t.Fatalf("create table in app as %s: %v", sandbox.UserPassword, err)
		}
		var ssl bool
		if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
			t.Fatalf("pg_stat_ssl.ssl = %v, %v; want true", ssl, err)
		}
	})

	t.Run("wrong password refused", func(t *testing.T) {
		cfg, err := pgx.ParseConfig("postgres://" + sandbox.UserPassword + ":nope@" + pg.Addr() + "/" + sandbox.DatabaseApp + "?sslmode=require")
		if err != nil {
			t.Fatal(err)
		}
		_, err = pgx.ConnectConfig(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "28P01") {
			t.Fatalf("connect with wrong password: %v, want SQLSTATE 28P01", err)
		}
	})

	t.Run("client backends", func(t *testing.T) {
		base := settledBackends(t, pg)
		conn, err := pgx.Connect(ctx, strings.Replace(pg.SuperuserDSN(), "dbname=postgres", "dbname="+sandbox.DatabaseApp, 1))
		if err != nil {
			t.Fatal(err)
		}
		// Polled: the backend of the previous count may still be exiting.
		waitBackends(t, pg, base+1)
		conn.Close(ctx)
		waitBackendsAtMost(t, pg, base)
	})
}

// waitBackends polls until PostgreSQL has exactly want client backends.
func waitBackends(t *testing.T, pg *sandbox.Postgres, want int) {
	t.Helper()
	pollBackends(t, pg, want, false)
}

// waitBackendsAtMost polls until PostgreSQL has at most want client backends.
func waitBackendsAtMost(t *testing.T, pg *sandbox.Postgres, want int) {
	t.Helper()
	pollBackends(t, pg, want, true)
}

// settledBackends returns the client backend count once it has stopped
// changing: backends of earlier tests may still be exiting.
func settledBackends(t *testing.T, pg *sandbox.Postgres) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	last, same := -1, 0
	for same < 3 {
		n, err := pg.ClientBackends(ctx)
		if err != nil {
			t.Fatalf("count backends: %v", err)
		}
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		time.Sleep(50 * time.Millisecond) // observe the count over time
	}
	return last
}

func pollBackends(t *testing.T, pg *sandbox.Postgres, want int, atMost bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	n := -1
	for {
		var err error
		n, err = pg.ClientBackends(ctx)
		if err == nil && (n == want || atMost && n < want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("client backends = %d (err %v), want %d within 10s", n, err, want)
		case <-tick.C:
		}
	}
}

// TestPostgresCloseStopsServer starts clusters in a short and in a long
// directory (whose socket path would not fit sun_path, so the socket goes to
// a directory of its own) and checks Close stops the server, removes only
// what it created, and is idempotent.
func TestPostgresCloseStopsServer(t *testing.T) {
	tests := []struct {
		name         string
		sub          string
		ownSocketDir bool
	}{
		{"short path", "", false},
		{"long path", strings.Repeat("d", 90), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tt.sub)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			pg, err := sandbox.StartPostgres(ctx, dir, nil)
			if err != nil {
				t.Fatalf("StartPostgres: %v", err)
			}
			t.Cleanup(func() { pg.Close() })
			if own := !strings.HasPrefix(pg.SocketDir, dir); own != tt.ownSocketDir {
				t.Fatalf("socket dir %s outside %s: %v, want %v", pg.SocketDir, dir, own, tt.ownSocketDir)
			}
			if _, err := pg.ClientBackends(ctx); err != nil {
				t.Fatalf("server not usable: %v", err)
			}
			sock := pg.SocketPath()
			if err := pg.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := pg.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("socket still present after Close: %v", err)
			}
			if _, err := os.Stat(pg.SocketDir); tt.ownSocketDir != errors.Is(err, os.ErrNotExist) {
				t.Fatalf("socket dir after Close: %v; want removed only if Postgres created it", err)
			}
			if _, err := os.Stat(filepath.Join(pg.DataDir, "PG_VERSION")); err != nil {
				t.Fatalf("Close removed the data dir the caller owns: %v", err)
			}
		})
	}
}
