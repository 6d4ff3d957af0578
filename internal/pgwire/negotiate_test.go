package pgwire

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// pipe returns both ends of a net.Pipe, closed when the test ends, with a
// hang guard.
func pipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	a.SetDeadline(time.Now().Add(20 * time.Second))
	b.SetDeadline(time.Now().Add(20 * time.Second))
	return a, b
}

var gssencRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}

// The encryption requests a client may send, and what comes back: 'N'
// for the first SSLRequest and GSSENCRequest without TLS, 08P01 for one
// more, the startup or cancel that follows handed to the caller.
func TestNegotiate(t *testing.T) {
	startup := AppendStartup(nil, Protocol30, Params{{"user", "u"}})
	tests := []struct {
		name    string
		send    [][]byte
		answers string // bytes answered before the result
		want    Kind   // 0: a refusal
	}{
		{"startup", [][]byte{startup}, "", KindStartup},
		{"cancel", [][]byte{AppendCancel(nil, CancelKey{PID: 1, Secret: "abcd"})}, "", KindCancel},
		{"ssl, startup", [][]byte{AppendSSLRequest(nil), startup}, "N", KindStartup},
		{"gss, ssl, startup", [][]byte{gssencRequest, AppendSSLRequest(nil), startup}, "NN", KindStartup},
		{"ssl, gss, startup", [][]byte{AppendSSLRequest(nil), gssencRequest, startup}, "NN", KindStartup},
		{"ssl twice", [][]byte{AppendSSLRequest(nil), AppendSSLRequest(nil)}, "N", 0},
		{"gss twice", [][]byte{gssencRequest, gssencRequest}, "N", 0},
		{"gss, ssl, ssl", [][]byte{gssencRequest, AppendSSLRequest(nil), AppendSSLRequest(nil)}, "NN", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pipe(t)
			type result struct {
				st  *Startup
				err error
			}
			done := make(chan result, 1)
			go func() {
				_, st, err := (&Negotiation{}).Negotiate(server)
				if err != nil {
					var pe *Error
					if errors.As(err, &pe) {
						pe.WriteTo(server)
					}
					server.Close()
				}
				done <- result{st, err}
			}()
			var answers []byte
			for _, p := range tt.send {
				if _, err := client.Write(p); err != nil {
					t.Fatal(err)
				}
				if len(answers) < len(tt.answers) && (len(p) == 8) {
					var b [1]byte
					if _, err := io.ReadFull(client, b[:]); err != nil {
						break
					}
					answers = append(answers, b[0])
				}
			}
			if string(answers) != tt.answers {
				t.Errorf("answers %q, want %q", answers, tt.answers)
			}
			if tt.want == 0 {
				m, err := ReadMessage(client, nil, 1<<16)
				var e pgproto3.ErrorResponse
				if err != nil || e.Decode(m.Body()) != nil || e.Code != CodeProtocolViolation || e.Routine != "rdsproxy:protocol" {
					t.Fatalf("got %+v, %v; want a 08P01 refusal", e, err)
				}
				if r := <-done; r.err == nil {
					t.Fatal("Negotiate returned no error")
				}
				return
			}
			if r := <-done; r.err != nil || r.st.Kind != tt.want {
				t.Fatalf("Negotiate = %+v, %v; want kind %d", r.st, r.err, tt.want)
			}
		})
	}
}

// An HTTP request comes back with the bytes already read.
func TestNegotiateHTTP(t *testing.T) {
	client, server := pipe(t)
	go client.Write([]byte("GET /v1/targets HTTP/1.1\r\n"))
	_, _, err := (&Negotiation{}).Negotiate(server)
	var hr *HTTPRequest
	if !errors.As(err, &hr) || string(hr.Head[:]) != "GET " || !errors.Is(err, ErrHTTP) {
		t.Fatalf("err = %v, want an HTTPRequest holding \"GET \"", err)
	}
}

// RequestTLS: 'N' is ErrTLSRefused, another byte ErrNotPostgreSQL, a
// far end that hangs up a StepError naming the step.
func TestRequestTLSAnswers(t *testing.T) {
	tests := []struct {
		name   string
		answer []byte
		check  func(error) bool
	}{
		{"refused", []byte{'N'}, func(err error) bool { return errors.Is(err, ErrTLSRefused) }},
		{"not postgres", []byte{'H'}, func(err error) bool { return errors.Is(err, ErrNotPostgreSQL) }},
		{"hang up", nil, func(err error) bool {
			var se *StepError
			return errors.As(err, &se) && se.Step == StepReadSSLAnswer
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pipe(t)
			go func() {
				st, err := ReadStartup(server, DefaultMaxStartupSize)
				if err == nil && st.Kind == KindSSLRequest {
					server.Write(tt.answer)
				}
				server.Close()
			}()
			_, err := RequestTLS(context.Background(), client, func(c net.Conn) *tls.Conn { return tls.Client(c, &tls.Config{}) })
			if !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
