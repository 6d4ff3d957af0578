package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// The transports an audit line names for a connection offered over four
// sessions: without a lane, and over three sessions and the lane.
const (
	stripedMode = "v=1;k=4;z=zstd"
	lanedMode   = "v=1;k=4;z=zstd;l=1"
)

// startStriped is a stack whose client offers striping over an SSM tunnel
// of sessions sessions and the lane (5% of frames dropped, 5% reordered),
// with the server's audit lines in audit.
func startStriped(t *testing.T, sessions int, audit *logBuffer) *stack {
	t.Helper()
	return startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, _ := stripedSSM(t, serverAddr, sessions)
		return tun
	}, func(c *client.Config) { c.Striping = true }, func(c *server.Config) { c.Logger = audit.jsonLogger() })
}

// oneAuditLine waits for the only session's audit line and checks the
// transport and stripes it names.
func oneAuditLine(t *testing.T, audit *logBuffer, transport string, stripes int) {
	t.Helper()
	lines := waitAuditLines(t, audit, 1)
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1: %v", len(lines), lines)
	}
	if l := lines[0]; l["transport"] != transport || l["stripes"] != float64(stripes) {
		t.Fatalf("audit line %v: want transport %s over %d stripes", l, transport, stripes)
	}
}

// waitJoins waits until the server has logged n stripes joined. A
// test that checks a session ran over all its stripes waits for them
// before it ends the session: they join in the background, and a short
// session on a loaded machine can end before they have.
func waitJoins(t *testing.T, logs *logBuffer, n int) {
	t.Helper()
	if err := awaitJoins(logs, n); err != nil {
		t.Fatal(err)
	}
}

// awaitJoins is waitJoins for any goroutine: it returns an error after 30 s.
func awaitJoins(logs *logBuffer, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for joinsLogged(logs) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d stripes joined after 30 s, want %d; the server's log:\n%s", joinsLogged(logs), n, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// joinsLogged counts the server's "stripe joined" debug lines in logs.
func joinsLogged(logs *logBuffer) int {
	return strings.Count(logs.String(), `"msg":"stripe joined"`)
}

// cancelAfter is an io.Writer that counts the bytes a COPY TO STDOUT
// delivers and calls cancel once n have arrived.
type cancelAfter struct {
	n, got int64
	once   sync.Once
	cancel func()
	at     time.Time
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.got += int64(len(p))
	if c.got >= c.n {
		c.once.Do(func() { c.at = time.Now(); c.cancel() })
	}
	return len(p), nil
}

// TestStripingCancelDuringCopy: on a connection striped over three SSM
// sessions and the lane, a COPY TO STDOUT far longer than the test streams data, and
// the user cancels it (pgx sends a CancelRequest when the context ends)
// after 4 MiB arrived: the COPY ends with 57014 within cancelBound, the
// same session answers a query afterwards, and its audit line names the
// four stripes it ran over.
func TestStripingCancelDuringCopy(t *testing.T) {
	audit := &logBuffer{}
	st := startStriped(t, 3, audit)
	ctx := context.Background()
	conn, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Data flows first, so that the further stripes have joined.
	if err := checksummedCopy(context.Background(), conn, 2<<20, closedGate()); err != nil {
		t.Fatalf("COPY before the cancel: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &cancelAfter{n: 4 << 20, cancel: cancel}
	_, err = conn.PgConn().CopyTo(cctx, w,
		"COPY (SELECT i, repeat(md5(i::text), 4) FROM (SELECT generate_series(1, 1000000000) AS i) s) TO STDOUT")
	if w.at.IsZero() {
		t.Fatalf("the COPY ended after %d bytes, before the cancel: %v", w.got, err)
	}
	took := time.Since(w.at)
	pgErr(t, err, "57014", "canceling statement due to user request")
	if took > cancelBound {
		t.Fatalf("the cancel took %v, want within %v", took, cancelBound)
	}
	t.Logf("cancel answered %v after the context ended, %d MiB received", took.Round(time.Millisecond), w.got>>20)
	var got string
	if err := conn.QueryRow(ctx, "SELECT $1::text", "after the cancel").Scan(&got); err != nil || got != "after the cancel" {
		t.Fatalf("session after the cancel: %q, %v", got, err)
	}
	waitJoins(t, audit, 3)
	conn.Close(ctx)
	oneAuditLine(t, audit, lanedMode, 4)
}

// closedGate is a gate that is already open.
func closedGate() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// TestStripingForgedJoin: while a striped session is half way through a
// COPY, connections to the server that claim to join it with made-up
// ids are refused with 08P01 and the reason stripe-join, and the session
// goes on: its COPY comes back with the same checksum, and its audit
// line names its own four stripes.
func TestStripingForgedJoin(t *testing.T) {
	audit := &logBuffer{}
	st := startStriped(t, 3, audit)
	conn, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	gate := make(chan struct{})
	var open sync.Once
	copied := make(chan error, 1)
	go func() { copied <- checksummedCopy(context.Background(), conn, 8<<20, gate) }()
	// On a failure below, the COPY finishes before conn is closed.
	defer func() { open.Do(func() { close(gate) }); <-copied }()
	for range 3 {
		id := make([]byte, 16)
		rand.Read(id)
		forged := rawStartup(t, st.serverAddr, pgwire.Protocol30,
			pgwire.Params{{Key: contract.JoinParam, Value: hex.EncodeToString(id)}}, "")
		e := errorOf(t, forged)
		reason, ours := contract.ReasonOf(e.Routine)
		if e.Code != pgwire.CodeProtocolViolation || !ours || reason != contract.ReasonStripeJoin {
			t.Fatalf("forged join answered %s %q (routine %q), want 08P01 with reason %s",
				e.Code, e.Message, e.Routine, contract.ReasonStripeJoin)
		}
	}
	open.Do(func() { close(gate) })
	err = <-copied
	copied <- err // for the deferred wait
	if err != nil {
		t.Fatalf("the striped session after forged joins: %v", err)
	}
	waitJoins(t, audit, 3)
	conn.Close(context.Background())
	oneAuditLine(t, audit, lanedMode, 4)
}

// besideTunnel wraps a tunnel so that its streams are tunnel.Spreaders of
// sessions sessions whose further streams come from beside.
type besideTunnel struct {
	tunnel.Tunnel
	sessions int
	beside   func(ctx context.Context, i int) (net.Conn, error)
}

func (b *besideTunnel) Dial(ctx context.Context) (net.Conn, error) {
	c, err := b.Tunnel.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return &besideConn{Conn: c, t: b}, nil
}

var _ tunnel.Spreader = (*besideConn)(nil)

// besideConn is a stream of a besideTunnel.
type besideConn struct {
	net.Conn
	t *besideTunnel
}

func (c *besideConn) DialBeside(ctx context.Context, i int) (net.Conn, error) {
	return c.t.beside(ctx, i)
}

func (c *besideConn) Sessions() int { return c.t.sessions }

func (c *besideConn) Lane() bool { return false }

// silentListener accepts connections and never answers them; Close ends
// its goroutine and the connections it holds.
func silentListener(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestStripingStripeThatNeverJoins: a client whose tunnel claims four
// sessions offers four stripes, but its further streams fail to open, or
// open onto something that never answers the join: the connection
// answers before the client gives up the joins at its 10 s join timeout,
// works over the one stripe it has (a checksummed COPY both ways), and the
// audit line names k=4 over 1 stripe. The control, whose further streams
// reach the server, runs over 4: the wrapper does make the client stripe.
func TestStripingStripeThatNeverJoins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stripes int
		// beside opens the further streams; it counts in timedOut the
		// unanswered joins the client gave up at its join timeout.
		beside func(t *testing.T, serverAddr string, timedOut *atomic.Int32) func(context.Context, int) (net.Conn, error)
	}{
		{"dial fails", 1, func(*testing.T, string, *atomic.Int32) func(context.Context, int) (net.Conn, error) {
			return func(context.Context, int) (net.Conn, error) { return nil, errors.New("session unavailable") }
		}},
		{"join unanswered", 1, func(t *testing.T, _ string, timedOut *atomic.Int32) func(context.Context, int) (net.Conn, error) {
			silent := silentListener(t)
			return func(ctx context.Context, _ int) (net.Conn, error) {
				context.AfterFunc(ctx, func() {
					if errors.Is(ctx.Err(), context.DeadlineExceeded) {
						timedOut.Add(1)
					}
				})
				var d net.Dialer
				return d.DialContext(ctx, "tcp", silent)
			}
		}},
		{"control: joins reach the server", 4, func(t *testing.T, serverAddr string, _ *atomic.Int32) func(context.Context, int) (net.Conn, error) {
			return func(ctx context.Context, _ int) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", serverAddr)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			audit := &logBuffer{}
			var joinsTimedOut atomic.Int32
			st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
				direct, err := tunnel.NewDirect(serverAddr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				return &besideTunnel{Tunnel: direct, sessions: 4, beside: tc.beside(t.(*testing.T), serverAddr, &joinsTimedOut)}
			}, func(c *client.Config) { c.Striping = true }, func(c *server.Config) { c.Logger = audit.jsonLogger() })
			conn, err := connectLocalErr(st.local["app"], sandbox.UserIAM)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			var one int
			if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			// An order, not a duration, so that a loaded machine does not
			// fail it: a connection that waited for its stripes answers
			// only once the client gave them up.
			if n := joinsTimedOut.Load(); n > 0 {
				t.Fatalf("the first query answered after the client gave up %d joins at its join timeout: the connection waited for its stripes", n)
			}
			if err := checksummedCopy(context.Background(), conn, 4<<20, closedGate()); err != nil {
				t.Fatal(err)
			}
			waitJoins(t, audit, tc.stripes-1)
			conn.Close(context.Background())
			oneAuditLine(t, audit, stripedMode, tc.stripes)
		})
	}
}

// smallStripedCopy is copyRoundTrip of 64 KiB, table stripe_leak_i.
func smallStripedCopy(addr string, i int, beforeEnd func() error) error {
	return copyRoundTrip(addr, fmt.Sprintf("stripe_leak_%d", i), 64<<10, beforeEnd)
}

// TestStripingNoLeaks: after 50 sessions striped over three SSM sessions
// and the lane, each with a small checksummed COPY, have ended, the
// goroutines and file descriptors of the process (client, server and SSM
// endpoint) and PostgreSQL's backends return to their baseline. Every session offered
// four stripes; some ended before all had joined, and the last ran over all.
func TestStripingNoLeaks(t *testing.T) {
	audit := &logBuffer{}
	st := startStriped(t, 3, audit)
	// Warm up: the SSM sessions open, and lazily started goroutines run.
	if err := smallStripedCopy(st.local["app"], 0, nil); err != nil {
		t.Fatal(err)
	}
	waitAuditLines(t, audit, 1)
	baseGoroutines, baseFDs, baseBackends := takeGoroutines(), openFDs(t), backends(t)
	const n = 50
	var g errgroup.Group
	g.SetLimit(4)
	for i := 1; i < n; i++ {
		g.Go(func() error { return smallStripedCopy(st.local["app"], i, nil) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// A session this short may end before its further stripes have
	// joined (they join in the background), which exercises the ends of
	// joins that come too late. The last one waits for its three, so that
	// one session's stripes all joined however loaded the machine.
	waitAuditLines(t, audit, n) // the sessions before it have ended: no more joins of theirs
	joined := joinsLogged(audit) + 3
	if err := smallStripedCopy(st.local["app"], n, func() error { return awaitJoins(audit, joined) }); err != nil {
		t.Fatal(err)
	}
	perStripes := map[float64]int{}
	for _, l := range waitAuditLines(t, audit, n+1) {
		stripes, _ := l["stripes"].(float64)
		if l["transport"] != lanedMode || stripes < 1 || stripes > 4 {
			t.Fatalf("audit line %v: want %s over 1 to 4 stripes", l, lanedMode)
		}
		perStripes[stripes]++
	}
	t.Logf("sessions per stripe count: %v", perStripes)
	if perStripes[4] == 0 {
		t.Fatalf("no session ran over its 4 stripes: %v", perStripes)
	}
	waitFor(t, 20*time.Second, "PostgreSQL backends back to baseline", func() bool { return backends(t) <= baseBackends })
	waitGoroutines(t, baseGoroutines, 30*time.Second)
	// A GC empties the runtime's pool of splice pipes (see TestNoLeaksAfterManySessions).
	waitFor(t, 20*time.Second, "file descriptors back to baseline", func() bool { runtime.GC(); return openFDs(t) <= baseFDs })
}
