package sandbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// TestEmulatorBurst opens 200 IAM sessions at once straight to the
// emulator, as a JDBC pool does on start, and holds them all open: RDS
// serves such a burst, so every login must succeed.
func TestEmulatorBurst(t *testing.T) {
	const n = 200
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tok := freshToken(t, sandbox.UserIAM)
	conns := make([]*pgx.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cfg := f.pgxConfig(t, f.emu, appHost, sandbox.UserIAM, tok)
			cfg.ConnectTimeout = 0 // the context bounds the whole burst
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = conn
			var who string
			if err := conn.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != sandbox.UserIAM {
				errs[i] = fmt.Errorf("current_user = %q, %v; want %s", who, err, sandbox.UserIAM)
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed < 5 {
				t.Errorf("login %d: %v", i, err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent IAM logins failed; RDS serves such a burst", failed, n)
	}
}
