package sandbox_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// TestEmulatorCancel cancels pg_sleep through the emulator, once with pgx's
// own CancelRequest (sent inside TLS, as pgx does for TLS connections) and
// once with a plaintext CancelRequest; the session must survive.
func TestEmulatorCancel(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		cancel func(t *testing.T, conn *pgx.Conn) error
	}{
		{"pgx over tls", func(t *testing.T, conn *pgx.Conn) error { return conn.PgConn().CancelRequest(testCtx(t)) }},
		{"plaintext", func(t *testing.T, conn *pgx.Conn) error {
			c := dialEmulator(t, f.emu)
			_, err := c.Write(cancelRequest(conn.PgConn()))
			if err == nil {
				_, err = io.Copy(io.Discard, c) // the emulator closes once forwarded
			}
			return err
		}},
		{"tls by hand", func(t *testing.T, conn *pgx.Conn) error {
			c := dialEmulator(t, f.emu)
			writeStartupCode(t, c, 80877103)
			s := make([]byte, 1)
			if _, err := io.ReadFull(c, s); err != nil || s[0] != 'S' {
				t.Fatalf("SSLRequest answer %q, %v", s, err)
			}
			tc := tls.Client(c, &tls.Config{RootCAs: f.ca.Pool(), ServerName: appHost})
			_, err := tc.Write(cancelRequest(conn.PgConn()))
			if err == nil {
				_, err = io.Copy(io.Discard, tc)
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn, err := f.connect(t, sandbox.UserIAM, freshToken(t, sandbox.UserIAM))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			sleepErr := make(chan error, 1)
			go func() {
				_, err := conn.Exec(ctx, `SELECT pg_sleep(60)`)
				sleepErr <- err
			}()
			waitForQuery(t, f.pg, conn.PgConn().PID(), "pg_sleep")
			if err := tt.cancel(t, conn); err != nil {
				t.Fatalf("cancel: %v", err)
			}
			var pgErr *pgconn.PgError
			if err := <-sleepErr; !errors.As(err, &pgErr) || pgErr.Code != "57014" {
				t.Fatalf("pg_sleep ended with %v, want SQLSTATE 57014 (query_canceled)", err)
			}
			var one int
			if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
				t.Fatalf("session unusable after cancel: %v", err)
			}
		})
	}
}

// cancelRequest encodes a protocol 3.0 CancelRequest for conn's backend.
func cancelRequest(conn *pgconn.PgConn) []byte {
	key := conn.SecretKey()
	b := make([]byte, 12+len(key))
	binary.BigEndian.PutUint32(b[0:], uint32(len(b)))
	binary.BigEndian.PutUint32(b[4:], 80877102)
	binary.BigEndian.PutUint32(b[8:], conn.PID())
	copy(b[12:], key)
	return b
}

// waitForQuery polls pg_stat_activity until backend pid runs a query
// containing text.
func waitForQuery(t *testing.T, pg *sandbox.Postgres, pid uint32, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	super, err := pgx.Connect(ctx, pg.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var running bool
		err := super.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'
			AND query LIKE '%' || $2 || '%')`, int32(pid), text).Scan(&running)
		if err != nil {
			t.Fatalf("poll pg_stat_activity: %v", err)
		}
		if running {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("backend %d never ran %q", pid, text)
		case <-tick.C:
		}
	}
}

// TestEmulatorBackendsEnd checks that PostgreSQL backends end when clients
// leave, both politely (Terminate) and by dropping the TCP connection.
func TestEmulatorBackendsEnd(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	base := settledBackends(t, f.pg)
	var conns []*pgx.Conn
	for range 4 {
		conn, err := f.connect(t, sandbox.UserIAM, freshToken(t, sandbox.UserIAM))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	waitBackends(t, f.pg, base+4)
	conns[0].Close(ctx)
	conns[1].Close(ctx)
	_ = conns[2].PgConn().Conn().Close() // vanish without Terminate
	_ = conns[3].PgConn().Conn().Close()
	waitBackendsAtMost(t, f.pg, base)
}

// TestEmulatorConcurrent holds 50 sessions open at once.
func TestEmulatorConcurrent(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	const n = 50
	before := f.emu.Accepted()
	base := settledBackends(t, f.pg)
	tok := freshToken(t, sandbox.UserIAM) // RDS accepts one token many times
	conns := make([]*pgx.Conn, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range n {
		g.Go(func() error {
			conn, err := pgx.ConnectConfig(gctx, f.pgxConfig(t, f.emu, appHost, sandbox.UserIAM, tok))
			if err != nil {
				return err
			}
			conns[i] = conn
			var who string
			if err := conn.QueryRow(gctx, `SELECT current_user`).Scan(&who); err != nil || who != sandbox.UserIAM {
				return errors.Join(err, errors.New("wrong current_user "+who))
			}
			return nil
		})
	}
	err := g.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	if err != nil {
		t.Fatalf("concurrent connect: %v", err)
	}
	waitBackends(t, f.pg, base+n)
	if got := f.emu.Accepted() - before; got != n {
		t.Fatalf("Accepted grew by %d, want %d", got, n)
	}
}

// TestEmulatorCloseEndsSessions checks Close ends live sessions and returns.
func TestEmulatorCloseEndsSessions(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	emu := f.startEmulator(t, sandbox.EmulatorConfig{})
	conn, err := pgx.ConnectConfig(ctx, f.pgxConfig(t, emu, appHost, sandbox.UserIAM, freshToken(t, sandbox.UserIAM)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	idle := dialEmulator(t, emu) // a client stuck before its startup packet
	if err := emu.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Fatal("query succeeded after the emulator closed")
	}
	if n, err := io.Copy(io.Discard, idle); err != nil || n != 0 {
		t.Fatalf("idle client: read %d bytes, err %v; want EOF", n, err)
	}
}
