package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// The metrics and the audit lines report exactly what a scripted run did:
// N sessions, M auth failures, and the bytes each session relayed, counted
// independently on the client's socket.
func TestMetricsAndAuditLines(t *testing.T) {
	began := time.Now()
	reg := prometheus.NewRegistry()
	audit := &logBuffer{}
	st := startStack(t, func(c *server.Config) {
		c.Metrics = server.NewMetrics(reg)
		c.Logger = audit.jsonLogger()
	})
	ctx := context.Background()
	const sessions = 3
	var wantFrom, wantTo int64
	for i := range sessions {
		from, to := countedSession(t, st.serverAddr, i)
		wantFrom += from
		wantTo += to
	}
	// Two auth failures with distinct reasons.
	_, err := pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, "not-a-token"))
	pgErr(t, err, "28P01", "IAM token rejected")
	_, err = pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "ghost", sandbox.UserIAM, "x"))
	pgErr(t, err, "28000", "not served")
	// A user the target does not allow, counted under the target's name
	// (it used to be counted with target="").
	_, err = pgx.ConnectConfig(ctx, serverConfig(t, st.serverAddr, "limited", sandbox.UserIAM, "x"))
	pgErr(t, err, "28000", "does not allow database user")

	lines := waitAuditLines(t, audit, sessions+3)
	var gotFrom, gotTo int64
	for _, l := range lines {
		if l["outcome"] != "ok" {
			continue
		}
		for _, k := range []string{"target", "user", "database", "application_name", "remote", "access_key_id", "start"} {
			if l[k] == nil || l[k] == "" {
				t.Errorf("audit line lacks %s: %v", k, l)
			}
		}
		// A number of milliseconds, in JSON too (slog writes a
		// time.Duration as nanoseconds there).
		if ms, ok := l["duration_ms"].(float64); !ok || ms < 0 || ms > float64(time.Since(began).Milliseconds()) {
			t.Errorf("audit duration_ms = %v, want milliseconds within the test's %s", l["duration_ms"], time.Since(began))
		}
		if l["ended_by"] != "client" { // each closed its connection
			t.Errorf("audit ended_by = %v, want client: %v", l["ended_by"], l)
		}
		if l["access_key_id"] != sandbox.AccessKeyID || l["user"] != sandbox.UserIAM || l["target"] != "app" {
			t.Errorf("audit line %v", l)
		}
		gotFrom += int64(l["bytes_from_client"].(float64))
		gotTo += int64(l["bytes_to_client"].(float64))
	}
	if gotFrom != wantFrom || gotTo != wantTo {
		t.Errorf("audit bytes from/to client = %d/%d, counted on the socket %d/%d", gotFrom, gotTo, wantFrom, wantTo)
	}
	m := scrape(t, reg)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rdsproxy_sessions_total", map[string]string{"target": "app", "outcome": "ok"}, sessions},
		{"rdsproxy_sessions_total", map[string]string{"target": "app", "outcome": "refused"}, 1},
		{"rdsproxy_sessions_total", map[string]string{"target": "", "outcome": "refused"}, 1},
		{"rdsproxy_auth_failures_total", map[string]string{"reason": "token-malformed"}, 1},
		{"rdsproxy_auth_failures_total", map[string]string{"reason": "unknown-target"}, 1},
		{"rdsproxy_sessions_total", map[string]string{"target": "limited", "outcome": "refused"}, 1},
		{"rdsproxy_connections_refused_total", map[string]string{"reason": "user-not-allowed"}, 1},
		{"rdsproxy_relayed_bytes_total", map[string]string{"target": "app", "direction": "from_client"}, float64(wantFrom)},
		{"rdsproxy_relayed_bytes_total", map[string]string{"target": "app", "direction": "to_client"}, float64(wantTo)},
		{"rdsproxy_sessions_active", nil, 0},
		{"rdsproxy_upstream_dial_seconds", nil, sessions}, // histogram sample count
	}
	for _, c := range checks {
		if got := value(m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// The audit line says which side ended a session, and with the database's
// last word when it said one: a DBA's pg_terminate_backend (57P01) and an
// idle_session_timeout (57P05) are the database's doing, not the client's,
// and they read differently.
func TestAuditSaysWhoEndedTheSession(t *testing.T) {
	audit := &logBuffer{}
	st := startStack(t, func(c *server.Config) { c.Logger = audit.jsonLogger() })
	ctx := context.Background()
	connect := func(app string) *pgx.Conn {
		cfg := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
		cfg.RuntimeParams["application_name"] = app
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	terminated := connect("terminated")
	defer terminated.Close(ctx) // its session ended without it
	var pid int
	if err := terminated.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	su := superuser(t)
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	idle := connect("idle")
	defer idle.Close(ctx)
	if _, err := idle.Exec(ctx, "SET idle_session_timeout = '50ms'"); err != nil {
		t.Fatal(err)
	}
	connect("closed").Close(ctx)
	leaveRightAfter(t, connect("after-an-error"), &pgproto3.Parse{Query: raise("EXCEPTION")}, // no Sync: no ReadyForQuery after the ERROR
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
	leaveRightAfter(t, connect("after-a-warning"), &pgproto3.Query{String: raise("WARNING") + "; SELECT pg_sleep(1)"})

	type end struct{ by, sqlstate string }
	want := map[string]end{"terminated": {"database", "57P01"}, "idle": {"database", "57P05"}, "closed": {"client", ""},
		"after-an-error": {"client", ""}, "after-a-warning": {"client", ""}}
	for _, l := range waitAuditLines(t, audit, len(want)) {
		app, _ := l["application_name"].(string)
		by, _ := l["ended_by"].(string)
		code, _ := l["sqlstate"].(string)
		if got := (end{by, code}); l["outcome"] != "ok" || got != want[app] {
			t.Errorf("%s: audit outcome %v, ended_by %q, sqlstate %q; want ok, %+v", app, l["outcome"], by, code, want[app])
		}
	}
}

// raise is a statement that raises a message of level with the code the
// client chose: 57P01, which reads like an administrator's.
func raise(level string) string {
	return "DO $$BEGIN RAISE " + level + " 'x' USING ERRCODE = '57P01'; END$$"
}

// leaveRightAfter sends msgs on conn's session and ends it (Terminate,
// close) right after the ErrorResponse or NoticeResponse they draw, so that
// the database's last message is one whose code the client chose. The
// audit line must not read it as why the session ended.
func leaveRightAfter(t *testing.T, conn *pgx.Conn, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	hj, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Conn.Close()
	fe := hj.Frontend
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	hj.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("waiting for the ERROR or WARNING: %v", err)
		}
		switch msg.(type) {
		case *pgproto3.ErrorResponse, *pgproto3.NoticeResponse:
			fe.Send(&pgproto3.Terminate{})
			fe.Flush()
			return
		}
	}
}

// countedSession runs one session straight against the server and returns
// the bytes the client wrote and read after startup.
func countedSession(t *testing.T, serverAddr string, i int) (from, to int64) {
	cfg := serverConfig(t, serverAddr, "app", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	cfg.RuntimeParams["application_name"] = "audit-test"
	var cc *countingConn
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		cc = &countingConn{Conn: c}
		return cc, err
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r0, w0 := cc.read.Load(), cc.written.Load()
	var s string
	if err := conn.QueryRow(ctx, "SELECT repeat('x', $1)", 1000*(i+1)).Scan(&s); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	return cc.written.Load() - w0, cc.read.Load() - r0
}

type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// waitAuditLines waits until n "session end" lines were logged.
func waitAuditLines(t *testing.T, logs *logBuffer, n int) []map[string]any {
	var lines []map[string]any
	waitFor(t, 20*time.Second, "audit lines", func() bool {
		lines = lines[:0]
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "session end" {
				lines = append(lines, l)
			}
		}
		return len(lines) >= n
	})
	return lines
}

// scrape fetches /metrics as Prometheus would and parses the text
// exposition format.
func scrape(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	var mfs []*dto.MetricFamily
	for _, mf := range byName {
		mfs = append(mfs, mf)
	}
	return mfs
}

// value finds a sample by name and exact labels; histograms give their count.
func value(mfs []*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !sameLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func sameLabels(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}
