package e2e

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// 500 sessions at once through both hops, each answering while all are open.
func TestFiveHundredConcurrentSessions(t *testing.T) {
	st := startStack(t)
	const n = 500
	ctx := context.Background()
	conns := make([]*pgx.Conn, n)
	var g errgroup.Group
	g.SetLimit(50)
	for i := range conns {
		g.Go(func() error {
			c, err := pgx.ConnectConfig(ctx, localConfig(t, st.local["app"], sandbox.UserIAM))
			conns[i] = c
			return err
		})
	}
	err := g.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(ctx)
			}
		}
	}()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	for i, c := range conns {
		g.Go(func() error {
			var got int
			if err := c.QueryRow(ctx, "SELECT $1::int", i).Scan(&got); err != nil || got != i {
				t.Errorf("session %d: %d, %v", i, got, err)
			}
			return nil
		})
	}
	g.Wait()
}

// After 5,000 short sessions, some of them killed mid-query, the proxies'
// goroutines and file descriptors return to their idle baseline and
// PostgreSQL has no leftover backend.
func TestNoLeaksAfterManySessions(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 sessions: not in -short runs")
	}
	st := startStack(t)
	ctx := context.Background()
	// Warm up once so lazily started runtime goroutines are in the baseline.
	connectLocal(t, st.local["app"], sandbox.UserIAM).Close(ctx)
	baseGoroutines, baseFDs := takeGoroutines(), openFDs(t)
	baseBackends := backends(t)
	var g errgroup.Group
	g.SetLimit(8)
	var mu sync.Mutex
	var failures int
	for i := range 5000 {
		g.Go(func() error {
			if err := shortSession(ctx, st.local["app"], i%25 == 0, t); err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
				t.Errorf("session %d: %v", i, err)
			}
			return nil
		})
	}
	g.Wait()
	if failures > 0 {
		t.Fatalf("%d of 5000 sessions failed", failures)
	}
	waitFor(t, 60*time.Second, "PostgreSQL backends back to baseline", func() bool { return backends(t) <= baseBackends })
	waitGoroutines(t, baseGoroutines, 30*time.Second)
	// The runtime keeps the pipes it splices TCP to TCP through in a pool
	// that only a garbage collection empties: collect, so that a pooled pipe
	// is not mistaken for a leaked descriptor.
	waitFor(t, 30*time.Second, "file descriptors back to baseline", func() bool { runtime.GC(); return openFDs(t) <= baseFDs })
}

// shortSession connects, queries and disconnects; with kill it starts a
// long query and resets the TCP connection instead, as a crashed client would.
func shortSession(ctx context.Context, addr string, kill bool, t testing.TB) error {
	conn, err := pgx.ConnectConfig(ctx, localConfig(t, addr, sandbox.UserIAM))
	if err != nil {
		return err
	}
	if !kill {
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	raw := conn.PgConn().Conn()
	if _, err := raw.Write(simpleQuery("SELECT pg_sleep(30)")); err != nil {
		return err
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0) // close with RST
	}
	return raw.Close()
}

// simpleQuery encodes a simple-protocol Query message.
func simpleQuery(sql string) []byte {
	msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(sql)+1))
	return append(append(msg, sql...), 0)
}

func backends(t testing.TB) int {
	n, err := sb.pg.ClientBackends(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func openFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
