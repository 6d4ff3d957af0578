package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// Every bad input gets its SQLSTATE and a sentence naming the problem,
// nothing is dialed that should not be, and a session opened before keeps
// working throughout.
func TestBadInputs(t *testing.T) {
	st := startStack(t)
	ctx := context.Background()
	bystander := connectLocal(t, st.local["app"], sandbox.UserIAM)
	now := nowUTC()
	tok := func(endpoint, user string, at time.Time) string { return sb.tokens.sign(t, endpoint, user, at) }
	tests := []struct {
		name, target, user, password string
		code, want                   string
		dialsEmulator                bool
	}{
		{"unknown target", "nope", sandbox.UserIAM, tok(appEndpoint, sandbox.UserIAM, now),
			"28000", `target "nope" is not served by this proxy`, false},
		{"user not in rdsproxy:users", "limited", sandbox.UserIAM, tok(limitedEndpoint, sandbox.UserIAM, now),
			"28000", `does not allow database user "` + sandbox.UserIAM + `"; allowed users: ` + sandbox.UserIAMOther, false},
		{"expired token", "app", sandbox.UserIAM, tok(appEndpoint, sandbox.UserIAM, now.Add(-20*time.Minute)),
			"28P01", "token expired 5m", false},
		{"token for another host", "app", sandbox.UserIAM, tok(roEndpoint, sandbox.UserIAM, now),
			"28P01", "token was signed for host " + roEndpoint + " but the target is " + appEndpoint, false},
		{"token for another user", "app", sandbox.UserIAM, tok(appEndpoint, sandbox.UserIAMOther, now),
			"28P01", `token is for DB user "` + sandbox.UserIAMOther + `"`, false},
		{"garbage instead of a token", "app", sandbox.UserIAM, "hunter2",
			"28P01", "IAM token rejected", false},
		{"user not in rds_iam: RDS's own error", "app", sandbox.UserNoIAM, tok(appEndpoint, sandbox.UserNoIAM, now),
			"28P01", `PAM authentication failed for user "` + sandbox.UserNoIAM + `"`, true},
		{"upstream down", "down", sandbox.UserIAM, tok(downEndpoint, sandbox.UserIAM, now),
			"08001", `cannot reach target "down"`, false},
		{"wrong upstream certificate", "badcert", sandbox.UserIAM, tok(badCertEndpoint, sandbox.UserIAM, now),
			"08001", `TLS with target "badcert" failed`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := sb.emu.Accepted()
			_, err := pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, tt.target, tt.user, tt.password))
			pgErr(t, err, tt.code, tt.want)
			if dialed := sb.emu.Accepted() > before; dialed != tt.dialsEmulator {
				t.Errorf("emulator dialed = %v, want %v", dialed, tt.dialsEmulator)
			}
			var one int
			if err := bystander.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("the other session broke: %v", err)
			}
		})
	}
}

// Malformed bytes close the connection without a panic; the server keeps
// serving. The startup timeout is short, so that the cases that wait for it
// end soon, but it also bounds the real login at the end: 2 s leaves room
// for a loaded machine.
func TestMalformedStartups(t *testing.T) {
	st := startStack(t, func(c *server.Config) { c.StartupTimeout = 2 * time.Second })
	random := make([]byte, 512)
	rand.Read(random)
	startup := pgwire.AppendStartup(nil, 3<<16, pgwire.Params{{Key: "user", Value: "u"}, {Key: "rdsproxy.target", Value: "app"}})
	tests := []struct {
		name string
		send []byte
		// wantError: the server answers with an ErrorResponse before closing.
		wantError string
	}{
		{"nothing at all (startup timeout)", nil, ""},
		// A length outside 8..--max-startup-size is refused with 08P01 (random
		// bytes are one, but for a chance of about 1 in 400,000).
		{"random bytes", random, "invalid startup packet length"},
		{"oversized startup packet", binary.BigEndian.AppendUint32(nil, 1<<30), "invalid startup packet length 1073741824"},
		{"truncated startup packet", startup[:len(startup)-4], ""},
		{"direct TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x00, 0x10}, ""},
		{"no target named", pgwire.AppendStartup(nil, 3<<16, pgwire.Params{{Key: "user", Value: "u"}}), "28000"},
		{"no user named", pgwire.AppendStartup(nil, 3<<16, pgwire.Params{{Key: "rdsproxy.target", Value: "app"}}), "names no database user"},
		// PostgreSQL answers these with 0A000 too.
		{"protocol 2.0", pgwire.AppendStartup(nil, 2<<16, pgwire.Params{{Key: "user", Value: "u"}}), "0A000"},
		{"protocol 4.0", pgwire.AppendStartup(nil, 4<<16, pgwire.Params{{Key: "user", Value: "u"}}), "0A000"},
		{"password is not a password message", append(slices.Clone(startup), 'Q', 0, 0, 0, 5, 0), "08P01"},
		// A 1 GiB password message: refused from its header, never buffered.
		{"huge message before authentication", append(slices.Clone(startup), 'p', 0x40, 0, 0, 0), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", st.serverAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(tt.send)
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			// ReadAll returns when the server closes; a reset (the server
			// closed with our bytes unread) is a close too.
			reply, err := io.ReadAll(conn)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("server did not close the connection: %v", err)
			}
			if tt.wantError != "" && !strings.Contains(string(reply), tt.wantError) {
				t.Fatalf("reply %q lacks %s", reply, tt.wantError)
			}
		})
	}
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
}

// The client's local listener gets the same treatment: port probes,
// garbage and unanswerable encryption requests close that one connection
// (SSLRequest and GSSENCRequest are declined with 'N', a second one is
// refused with 08P01 as PostgreSQL refuses it, a protocol other than 3
// with 0A000, as PostgreSQL does); the client keeps serving,
// and a session opened before keeps working.
func TestClientLocalListenerBadInputs(t *testing.T) {
	st := startStack(t)
	bystander := connectLocal(t, st.local["app"], sandbox.UserIAM)
	random := make([]byte, 512)
	rand.Read(random)
	tests := []struct {
		name  string
		send  []byte
		reply string // what the client answers before closing
		code  string // the SQLSTATE of an ErrorResponse after reply, if any
		msg   string // a part of its message
	}{
		{"port probe (connect and close)", nil, "", "", ""},
		{"random bytes", random, "", "08P01", "invalid startup packet length"},
		{"oversized startup packet", binary.BigEndian.AppendUint32(nil, 1<<30), "", "08P01", "invalid startup packet length 1073741824"},
		{"direct TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x00, 0x10}, "", "", ""},
		{"SSLRequest, then hang up", pgwire.AppendSSLRequest(nil), "N", "", ""},
		{"GSSENCRequest, then hang up", binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877104), "N", "", ""},
		{"four SSLRequests", slices.Concat(pgwire.AppendSSLRequest(nil), pgwire.AppendSSLRequest(nil),
			pgwire.AppendSSLRequest(nil), pgwire.AppendSSLRequest(nil)), "N", "08P01", ""},
		{"no user named", pgwire.AppendStartup(nil, 3<<16, pgwire.Params{{Key: "database", Value: "app"}}), "", "28000", "names no database user"},
		{"protocol 2.0", pgwire.AppendStartup(nil, 2<<16, pgwire.Params{{Key: "user", Value: "u"}}), "", "0A000", ""},
		{"protocol 4.0", pgwire.AppendStartup(nil, 4<<16, pgwire.Params{{Key: "user", Value: "u"}}), "", "0A000", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", st.local["app"])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(tt.send)
			if tt.send == nil || tt.reply != "" && len(tt.send) == 8 {
				conn.(*net.TCPConn).CloseWrite()
			}
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			reply, err := io.ReadAll(conn)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client did not close the connection: %v", err)
			}
			if tt.code != "" {
				var e pgproto3.ErrorResponse
				if len(reply) < len(tt.reply)+5 || e.Decode(reply[len(tt.reply)+5:]) != nil || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
					t.Fatalf("reply after %q is %q, want an ErrorResponse %s %q", tt.reply, reply[len(tt.reply):], tt.code, tt.msg)
				}
				reply = reply[:len(tt.reply)]
			}
			if string(reply) != tt.reply {
				t.Fatalf("reply %q, want %q", reply, tt.reply)
			}
		})
	}
	if err := bystander.Ping(context.Background()); err != nil {
		t.Fatalf("the open session broke: %v", err)
	}
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("client stopped serving: %v", err)
	}
}

// max-sessions: the N+1th client gets 53300, counted in the refusals (it
// used to be in no metric); when one ends, a new one is admitted.
func TestMaxSessions(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := startStack(t, func(c *server.Config) { c.MaxSessions, c.Metrics = 2, server.NewMetrics(reg) })
	a := connectLocal(t, st.local["app"], sandbox.UserIAM)
	connectLocal(t, st.local["app"], sandbox.UserIAM)
	_, err := pgx.ConnectConfig(context.Background(), localConfig(t, st.local["app"], sandbox.UserIAM))
	pgErr(t, err, "53300", "maximum of 2 sessions")
	if got := counterValue(t, reg, "rdsproxy_connections_refused_total", "reason", "too-many-sessions"); got != 1 {
		t.Errorf("rdsproxy_connections_refused_total{reason=\"too-many-sessions\"} = %v, want 1", got)
	}
	a.Close(context.Background())
	waitFor(t, 10*time.Second, "a session slot", func() bool {
		c, err := pgx.ConnectConfig(context.Background(), localConfig(t, st.local["app"], sandbox.UserIAM))
		if err == nil {
			c.Close(context.Background())
		}
		return err == nil
	})
}

// 200 connections that send nothing do not stop a legitimate client, and
// each is closed at the first-byte timeout, long before the whole
// startup's (which alone used to bound a silent socket).
func TestSilentConnectionsDoNotBlock(t *testing.T) {
	st := startStack(t, func(c *server.Config) { c.FirstByteTimeout, c.StartupTimeout = 2*time.Second, 2*time.Minute })
	silent := make([]net.Conn, 200)
	for i := range silent {
		c, err := net.Dial("tcp", st.serverAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent[i] = c
	}
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("legitimate client blocked: %v", err)
	}
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("silent connection %d: read %d bytes, %v; want it closed at the first-byte timeout", i, n, err)
		}
	}
}

// When the tunnel cannot reach the server, psql gets 08001 and a sentence
// from the client proxy instead of a hang or a reset, with a hint that
// names rdsproxy doctor.
func TestServerUnreachable(t *testing.T) {
	st := startStackVia(t, func(t testing.TB, _ string) tunnel.Tunnel {
		tun, err := tunnel.NewDirect(closedAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return tun
	})
	_, err := pgx.ConnectConfig(context.Background(), localConfig(t, st.local["app"], sandbox.UserIAM))
	pgErr(t, err, "08001", "cannot reach the rdsproxy server")
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && !strings.Contains(pe.Hint, "rdsproxy doctor app") {
		t.Errorf("hint %q does not say how to find out more", pe.Hint)
	}
	out, _ := psql(t, context.Background(), st.local["app"], sandbox.UserIAM, "-c", "SELECT 1")
	if !strings.Contains(out, "cannot reach the rdsproxy server") {
		t.Fatalf("psql printed %q", out)
	}
}
