package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/server"
)

// A passthrough client that never answers its database's password
// request holds a session slot and a database connection: it has
// PasswordTimeout for the answer, as an IAM client has for its token, not
// the whole login timeout. It is told so with 08006, the database's
// connection closes, and the slot serves the next client.
func TestPassthroughSilentClientGivesUpItsSlot(t *testing.T) {
	up := startUpstream(t)
	plain := discovery.Target{Name: "plain", Endpoint: up.addr, Auth: discovery.AuthPassthrough, TLS: discovery.TLSDisable}
	ln := startServer(t, []discovery.Target{plain}, func(c *server.Config) {
		c.MaxSessions, c.PasswordTimeout = 1, time.Second // the login timeout stays 30 s, past the pipe's 20 s guard
	})
	silent := ln.dial(t)
	write(t, silent, startupMsg("user", "bob", pgwire.TargetParam, "plain"))
	if m := readMsg(t, silent); m.AuthCode() != pgwire.AuthMD5Password {
		t.Fatalf("got %q %d, want the upstream's md5 request", m.Type, m.AuthCode())
	}
	e := decodeError(t, readMsg(t, silent))
	if e.Code != "08006" || !strings.Contains(e.Message, "password request") {
		t.Fatalf("a silent passthrough client got %s %q, want 08006 naming the password request", e.Code, e.Message)
	}
	// The slot is given back once the session ends, just after the error.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := ln.dial(t)
		write(t, c, startupMsg("user", "bob", pgwire.TargetParam, "plain"))
		m := readMsg(t, c)
		if m.AuthCode() == pgwire.AuthMD5Password {
			break
		}
		if e := decodeError(t, m); e.Code != "53300" || time.Now().After(deadline) {
			t.Fatalf("the next client got %s %q, want the md5 request once the slot is free", e.Code, e.Message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A database's ErrorResponse during the login whose code is not a
// SQLSTATE (bytes that are not UTF-8, from a database or whoever answers
// for a passthrough target without TLS) reaches the client as sent, and
// is counted as upstream-XX000: as a metric label it would panic the
// server. The server then serves the next client.
func TestUpstreamRefusalWithoutASQLState(t *testing.T) {
	db := refusingUpstream(t, "\xff\xfe\xfd\xfc\xfb")
	plain := discovery.Target{Name: "plain", Endpoint: db, Auth: discovery.AuthPassthrough, TLS: discovery.TLSDisable}
	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	var logs syncbuf.Buffer
	ln := startServer(t, []discovery.Target{plain}, func(c *server.Config) {
		c.Metrics, c.Logger = metrics, slog.New(slog.NewTextHandler(&logs, nil))
	})
	for i := range 2 {
		c := ln.dial(t)
		write(t, c, startupMsg("user", "bob", pgwire.TargetParam, "plain"))
		if e := decodeError(t, readMsg(t, c)); e.Code != "\xff\xfe\xfd\xfc\xfb" || e.Message != "nope" {
			t.Fatalf("client %d got %q %q, want the database's own ErrorResponse", i+1, e.Code, e.Message)
		}
	}
	if got := refusals(t, reg, "upstream-XX000"); got != 2 {
		t.Fatalf("rdsproxy_connections_refused_total{reason=\"upstream-XX000\"} = %v, want 2", got)
	}
	// The audit line says what the database told the client.
	poll(t, 10*time.Second, "two audit lines", func() bool { return strings.Count(logs.String(), "session end") == 2 })
	if n := strings.Count(logs.String(), "reason=upstream-XX000 message=nope"); n != 2 {
		t.Fatalf("%d audit lines name the database's refusal, want 2:\n%s", n, logs.String())
	}
}

// refusingUpstream answers every StartupMessage with a FATAL
// ErrorResponse whose C field is code, then closes.
func refusingUpstream(t *testing.T, code string) string {
	t.Helper()
	body := "SFATAL\x00C" + code + "\x00Mnope\x00\x00"
	reply := append([]byte{pgwire.MsgErrorResponse, 0, 0, 0, byte(4 + len(body))}, body...)
	return serveEach(t, func(c net.Conn) {
		if _, err := pgwire.ReadStartup(c, pgwire.DefaultMaxStartupSize); err == nil {
			c.Write(reply)
		}
	})
}

// refusals is rdsproxy_connections_refused_total for reason.
func refusals(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "rdsproxy_connections_refused_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A connection that began a GET /v1/targets request and stalls inside it
// waits for its client as a stalled startup does: at the pending caps it
// is evicted, with a 503 that says why, and the honest newcomer is served.
func TestStalledHTTPRequestIsEvicted(t *testing.T) {
	ln := startServer(t, []discovery.Target{ordersIAM}, func(c *server.Config) {
		c.MaxPending, c.MaxPendingPerSource = 2, 2
	})
	var stalled []net.Conn
	for range 2 {
		c := ln.dial(t)
		write(t, c, []byte("GET "))
		// net.Pipe's write returns once the server has read it: the server
		// is reading the request now.
		write(t, c, []byte("/v1/tar"))
		stalled = append(stalled, c)
	}
	honest := ln.dial(t)
	write(t, honest, startupMsg("user", "alice", pgwire.TargetParam, "nosuch"))
	if e := decodeError(t, readMsg(t, honest)); e.Code != "28000" {
		t.Fatalf("the honest newcomer got %s %q, want the server's own answer (28000, no such target), not an eviction", e.Code, e.Message)
	}
	resp, err := http.ReadResponse(bufio.NewReader(stalled[0]), nil)
	if err != nil {
		t.Fatalf("the evicted request got no HTTP answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "to make room") {
		t.Fatalf("the evicted request got %s %q, want 503 saying why", resp.Status, body)
	}
}

// stallingSTS fails each call after holding it for hold, as an STS that
// does not answer until the server's timeout.
type stallingSTS struct{ hold time.Duration }

func (s stallingSTS) Do(*http.Request) (*http.Response, error) {
	time.Sleep(s.hold)
	return nil, errors.New("no answer")
}

// The answer to GET /v1/targets comes after the STS call, which may end
// past the deadline the request itself had: the client still gets it (a
// 503 that names STS), not a connection closed without a word.
func TestTargetsAnswerAfterSlowSTS(t *testing.T) {
	// The request's deadline is FirstByteTimeout from the accept, before
	// the call begins: a call held that long ends past it, however slowly
	// the machine runs; and the request has that long to arrive.
	const firstByte = 2 * time.Second
	ln := startServer(t, []discovery.Target{ordersIAM}, func(c *server.Config) {
		c.FirstByteTimeout = firstByte
		c.Identity = &server.IdentityConfig{ServerID: "srv-1", Region: "eu-west-1", HTTP: stallingSTS{firstByte}}
	})
	creds := aws.Credentials{AccessKeyID: "ASIATESTKEY000000001", SecretAccessKey: "s", SessionToken: "t"}
	id, err := callerid.Sign(context.Background(), creds, "eu-west-1", "srv-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := ln.dial(t)
	write(t, c, []byte("GET /v1/targets HTTP/1.1\r\nHost: rdsproxy\r\n"+callerid.HTTPHeader+": "+id.Encode()+"\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after a slow STS call: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "STS") {
		t.Fatalf("got %s %q, want 503 naming STS", resp.Status, body)
	}
}
