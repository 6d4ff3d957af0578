package e2e

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// laneCounter is an SSM tunnel that counts the streams opened over its
// lane.
type laneCounter struct {
	*ssmtun.Tunnel
	lanes atomic.Int64
}

func (c *laneCounter) DialLane(ctx context.Context) (net.Conn, error) {
	c.lanes.Add(1)
	return c.Tunnel.DialLane(ctx)
}

// TestLaneOnlyWhereUsed: a connection takes the tunnel's lane only when
// the server will use it as one. A passthrough target is never striped,
// so its connections keep off the lane; a server that keeps connections
// raw (--no-striping, or older than striping), or takes one stripe
// (--max-stripes 1, so no lane), gets the first connection over the lane
// and the ones after it spread over the other sessions, instead of all
// crowding the one session the lane is.
func TestLaneOnlyWhereUsed(t *testing.T) {
	for _, c := range []struct {
		name      string
		server    func(*server.Config)
		target    string
		user      string
		password  string
		lanes     int64
		transport string
	}{
		{"laned server", func(*server.Config) {}, "app", sandbox.UserIAM, "", 3, "v=1;k=3;z=zstd;l=1"},
		{"passthrough target", func(*server.Config) {}, "plain", sandbox.UserPassword, sandbox.PasswordOfPW, 0, "raw"},
		{"server without striping", func(c *server.Config) { c.NoStriping = true }, "app", sandbox.UserIAM, "", 1, "raw"},
		{"server with one stripe", func(c *server.Config) { c.MaxStripes = 1 }, "app", sandbox.UserIAM, "", 1, "v=1;k=1;z=zstd"},
	} {
		t.Run(c.name, func(t *testing.T) {
			audit := &logBuffer{}
			var lc *laneCounter
			st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
				tun, _ := stripedSSM(t, serverAddr, 2)
				lc = &laneCounter{Tunnel: tun.(*ssmtun.Tunnel)}
				return lc
			}, func(cc *client.Config) { cc.Striping = true }, func(sc *server.Config) { sc.Logger = audit.jsonLogger(); c.server(sc) })
			ctx := context.Background()
			for i := range 3 {
				cfg := localConfig(t, st.local[c.target], c.user)
				cfg.Password = c.password
				conn, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				var n int
				if err := conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("connection %d: %d, %v", i, n, err)
				}
				conn.Close(ctx)
			}
			if got := lc.lanes.Load(); got != c.lanes {
				t.Errorf("%d of 3 connections opened over the lane; want %d", got, c.lanes)
			}
			for _, l := range waitAuditLines(t, audit, 3) {
				if l["transport"] != c.transport {
					t.Errorf("audit line %v: want transport %s", l, c.transport)
				}
			}
		})
	}
}

// TestLaneAfterRefusal: a connection the server refuses (here
// --max-sessions is full) says nothing about the transport, so the next
// connection still takes the lane.
func TestLaneAfterRefusal(t *testing.T) {
	var lc *laneCounter
	st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, _ := stripedSSM(t, serverAddr, 2)
		lc = &laneCounter{Tunnel: tun.(*ssmtun.Tunnel)}
		return lc
	}, func(cc *client.Config) { cc.Striping = true }, func(sc *server.Config) { sc.MaxSessions = 1 })
	ctx := context.Background()
	held, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = connectLocalErr(st.local["app"], sandbox.UserIAM)
	pgErr(t, err, "53300", "maximum of 1 sessions")
	held.Close(ctx)
	waitFor(t, 20*time.Second, "the held session to end", func() bool {
		conn, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
		if err == nil {
			conn.Close(ctx)
		}
		return err == nil
	})
	if got := lc.lanes.Load(); got < 3 {
		t.Errorf("%d connections opened over the lane; want all of them (3 or more), the refused one too", got)
	}
}
