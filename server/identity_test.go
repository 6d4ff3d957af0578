package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// fakeSTS answers with a fixed status and body and records the requests.
type fakeSTS struct {
	status int
	body   string
	err    error
	calls  atomic.Int64
	gate   chan struct{} // when set, each call waits for it
	inside chan struct{} // when set, each call sends on it first
	mu     sync.Mutex
	last   *http.Request
	body0  string
}

func (f *fakeSTS) Do(r *http.Request) (*http.Response, error) {
	f.calls.Add(1)
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.last, f.body0 = r, string(b)
	f.mu.Unlock()
	if f.inside != nil {
		f.inside <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	if f.err != nil {
		return nil, f.err
	}
	return &http.Response{StatusCode: f.status, Body: io.NopCloser(strings.NewReader(f.body))}, nil
}

const okAnswer = `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>
<Arn>arn:aws:sts::111122223333:assumed-role/Dev/alice@example.com</Arn><UserId>AROA:alice</UserId><Account>111122223333</Account>
</GetCallerIdentityResult></GetCallerIdentityResponse>`

var (
	testCreds = aws.Credentials{AccessKeyID: "ASIATESTKEY000000001", SecretAccessKey: "s", SessionToken: "tok"}
	testNow   = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

func testVerifier(t *testing.T, sts HTTPDoer) *identityVerifier {
	t.Helper()
	cfg := IdentityConfig{ServerID: "srv-1", Region: "eu-west-1", Endpoint: "https://vpce.example/", HTTP: sts}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return newIdentityVerifier(cfg.withDefaults(), func() time.Time { return testNow }, nil, slog.New(slog.DiscardHandler))
}

func sign(t *testing.T, creds aws.Credentials, region, serverID string, at time.Time) callerid.Request {
	t.Helper()
	r, err := callerid.Sign(context.Background(), creds, region, serverID, at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantRefusal(t *testing.T, err error, code, reason, msg string) {
	t.Helper()
	var pe *pgwire.Error
	if !errors.As(err, &pe) || pe.Code != code || pe.Reason != reason || !strings.Contains(pe.Message, msg) {
		t.Errorf("err = %v, want %s %s containing %q", err, code, reason, msg)
	}
}

// Everything that needs no AWS call is checked before STS is asked.
func TestIdentityPrecheck(t *testing.T) {
	sts := &fakeSTS{status: 200, body: okAnswer}
	v := testVerifier(t, sts)
	good := sign(t, testCreds, "eu-west-1", "srv-1", testNow)
	tamper := func(f func(r *callerid.Request)) string {
		r := sign(t, testCreds, "eu-west-1", "srv-1", testNow)
		f(&r)
		return r.Encode()
	}
	tests := []struct {
		name, enc, keyID, code, reason, msg string
	}{
		{"not base64", "%%%", "", "08P01", "identity-malformed", "not base64url"},
		{"too long", strings.Repeat("A", callerid.MaxEncoded+1), "", "08P01", "identity-malformed", "longer than"},
		{"other region", sign(t, testCreds, "us-east-1", "srv-1", testNow).Encode(), "", "08P01", "identity-malformed", "signed for sts in us-east-1"},
		{"host not STS", tamper(func(r *callerid.Request) { r.Headers["host"] = "evil.example" }), "", "08P01", "identity-malformed", `host "evil.example"`},
		{"server id not signed", tamper(func(r *callerid.Request) {
			r.Authorization = strings.Replace(r.Authorization, ";x-rdsproxy-server-id", "", 1)
		}), "", "08P01", "identity-malformed", "does not cover x-rdsproxy-server-id"},
		{"signed header missing", tamper(func(r *callerid.Request) { delete(r.Headers, "x-amz-security-token") }), "", "08P01", "identity-malformed", "x-amz-security-token"},
		{"header splitting", tamper(func(r *callerid.Request) { r.Headers["x-amz-date"] += "\r\nX-Evil: 1" }), "", "08P01", "identity-malformed", "invalid header"},
		{"expired", sign(t, testCreds, "eu-west-1", "srv-1", testNow.Add(-16*time.Minute)).Encode(), "", "28000", "identity-expired", "signed 16m0s ago"},
		{"future", sign(t, testCreds, "eu-west-1", "srv-1", testNow.Add(3*time.Minute)).Encode(), "", "28000", "identity-expired", "in the future"},
		{"another server", sign(t, testCreds, "eu-west-1", "srv-2", testNow).Encode(), "", "28000", "identity-wrong-server", `for server "srv-2"`},
		{"another key", good.Encode(), "AKIAOTHER", "28000", "identity-key-mismatch", "access key ASIATESTKEY000000001 but the IAM token with AKIAOTHER"},
	}
	for _, tt := range tests {
		_, _, err := v.verify(t.Context(), tt.enc, tt.keyID)
		wantRefusal(t, err, tt.code, tt.reason, tt.msg)
	}
	if n := sts.calls.Load(); n != 0 {
		t.Errorf("STS was called %d times for identities refused by the pre-check", n)
	}
	p, key, err := v.verify(t.Context(), good.Encode(), testCreds.AccessKeyID)
	if err != nil || p.Normalized != "arn:aws:iam::111122223333:role/Dev" || p.Session != "alice@example.com" || key != testCreds.AccessKeyID {
		t.Fatalf("good identity: %+v, %s, %v", p, key, err)
	}
}

// The request STS gets is rebuilt by the server: its endpoint, the signed
// Host, the fixed body, the signed headers and nothing the client added.
func TestIdentityRequestIsRebuilt(t *testing.T) {
	sts := &fakeSTS{status: 200, body: okAnswer}
	v := testVerifier(t, sts)
	r := sign(t, testCreds, "eu-west-1", "srv-1", testNow)
	r.Headers["x-forwarded-host"] = "attacker.example" // unsigned: must not travel
	if _, _, err := v.verify(t.Context(), r.Encode(), ""); err != nil {
		t.Fatal(err)
	}
	got := sts.last
	if got.URL.String() != "https://vpce.example/" || got.Host != "sts.eu-west-1.amazonaws.com" || sts.body0 != callerid.Body ||
		got.Header.Get("X-Forwarded-Host") != "" || got.Header.Get("X-Rdsproxy-Server-Id") != "srv-1" ||
		got.Header.Get("X-Amz-Security-Token") != "tok" || got.Header.Get("Authorization") != r.Authorization {
		t.Errorf("STS got %s %s Host=%s headers=%v body=%q", got.Method, got.URL, got.Host, got.Header, sts.body0)
	}
}

func TestIdentitySTSAnswers(t *testing.T) {
	errXML := func(code string) string {
		return `<ErrorResponse><Error><Type>Sender</Type><Code>` + code + `</Code><Message>no</Message></Error></ErrorResponse>`
	}
	tests := []struct {
		name   string
		sts    *fakeSTS
		code   string
		reason string
	}{
		{"signature refused", &fakeSTS{status: 403, body: errXML("SignatureDoesNotMatch")}, "28P01", "identity-refused"},
		{"expired session", &fakeSTS{status: 403, body: errXML("ExpiredToken")}, "28P01", "identity-refused"},
		{"throttled", &fakeSTS{status: 400, body: errXML("Throttling")}, "08001", "identity-sts-unreachable"},
		{"server error", &fakeSTS{status: 503, body: "busy"}, "08001", "identity-sts-unreachable"},
		{"network", &fakeSTS{err: errors.New("dial tcp: no route to host")}, "08001", "identity-sts-unreachable"},
		{"200 without an ARN", &fakeSTS{status: 200, body: "<x/>"}, "08001", "identity-sts-unreachable"},
	}
	for _, tt := range tests {
		v := testVerifier(t, tt.sts)
		enc := sign(t, testCreds, "eu-west-1", "srv-1", testNow).Encode()
		_, _, err := v.verify(t.Context(), enc, "")
		wantRefusal(t, err, tt.code, tt.reason, "")
		_, _, _ = v.verify(t.Context(), enc, "")
		if n := tt.sts.calls.Load(); n != 2 {
			t.Errorf("%s: %d STS calls for two tries, want 2 (refusals are not cached)", tt.name, n)
		}
	}
}

// An STS outage is logged once however many callers it turns away, at
// Warn with the endpoint and the error, and its end once, at Info. The
// callers hear that STS is unreachable and why, but not the endpoint.
func TestSTSOutageLoggedOncePerStreak(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 443}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	sts := &fakeSTS{err: &url.Error{Op: "Post", URL: "https://vpce.example/", Err: refused}}
	cfg := IdentityConfig{ServerID: "srv-1", Region: "eu-west-1", Endpoint: "https://vpce.example/", HTTP: sts}
	logs := &syncbuf.Buffer{}
	v := newIdentityVerifier(cfg.withDefaults(), func() time.Time { return testNow }, nil, slog.New(slog.NewTextHandler(logs, nil)))
	enc := sign(t, testCreds, "eu-west-1", "srv-1", testNow).Encode()
	for range 3 {
		_, _, err := v.verify(t.Context(), enc, "")
		wantRefusal(t, err, "08001", "identity-sts-unreachable", "(connection refused)")
		if strings.Contains(err.Error(), "vpce.example") || strings.Contains(err.Error(), "10.0.0.5") {
			t.Errorf("a caller is told the server's STS endpoint: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"AWS STS is unreachable"); n != 1 ||
		!strings.Contains(logs.String(), "endpoint=https://vpce.example/") || !strings.Contains(logs.String(), "10.0.0.5:443") {
		t.Fatalf("%d warnings for three failed calls, want one naming the endpoint and the whole error:\n%s", n, logs.String())
	}
	sts.err, sts.status, sts.body = nil, 200, okAnswer
	for range 2 {
		if _, _, err := v.verify(t.Context(), enc, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "level=INFO msg=\"AWS STS answers again"); n != 1 || !strings.Contains(logs.String(), "failures=3") {
		t.Fatalf("the recovery logged %d times, want once with the 3 failures:\n%s", n, logs.String())
	}
}

// A request to STS that failed is named to the caller by its kind only:
// the error itself names the server's endpoint, its address or resolver.
func TestSTSFailureKinds(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "vpce-0abc.sts.eu-west-1.vpce.amazonaws.com", Server: "10.0.0.2:53"}}, "its name did not resolve"},
		{context.DeadlineExceeded, "no answer in time"},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "connection reset"},
		{&tls.CertificateVerificationError{Err: errors.New("x509: certificate is valid for vpce-other, not vpce-0abc")}, "its TLS certificate was not accepted"},
		{errors.New("tls: something about vpce-0abc"), "the request failed"},
	} {
		err := stsUnreachable(&url.Error{Op: "Post", URL: "https://vpce-0abc.sts.eu-west-1.vpce.amazonaws.com/", Err: tt.err})
		if !strings.Contains(err.Message, "("+tt.want+")") || strings.Contains(err.Message, "vpce") || strings.Contains(err.Message, "10.0.0.2") {
			t.Errorf("%v: the caller is told %q, want %q and no endpoint", tt.err, err.Message, tt.want)
		}
	}
}

// Concurrent checks of one signed request share one STS call; the answer
// is reused until the TTL; another signature is another call.
func TestIdentityCache(t *testing.T) {
	sts := &fakeSTS{status: 200, body: okAnswer, gate: make(chan struct{}), inside: make(chan struct{}, 16)}
	v := testVerifier(t, sts)
	enc := sign(t, testCreds, "eu-west-1", "srv-1", testNow).Encode()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := v.verify(t.Context(), enc, "")
			errs <- err
		}()
	}
	<-sts.inside // the first caller is inside STS; the others wait for it or find its answer
	close(sts.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := sts.calls.Load(); n != 1 {
		t.Errorf("8 concurrent checks made %d STS calls, want 1", n)
	}
	other := sign(t, testCreds, "eu-west-1", "srv-1", testNow.Add(-time.Second)).Encode()
	v.verify(t.Context(), other, "")
	if n := sts.calls.Load(); n != 2 {
		t.Errorf("a second signed request made %d calls in all, want 2", n)
	}
	v.now = func() time.Time { return testNow.Add(6 * time.Minute) }
	v.verify(t.Context(), enc, "")
	if n := sts.calls.Load(); n != 3 {
		t.Errorf("after the TTL: %d calls in all, want 3", n)
	}
}

// A captured identity whose signed headers were edited keeps its
// signature but is never answered from the cache: a fresher X-Amz-Date
// would otherwise stretch the 15-minute replay window by the cache's TTL.
// Each edit goes to STS, which refuses it.
func TestIdentityCacheMissesEditedRequests(t *testing.T) {
	sts := &fakeSTS{status: 200, body: okAnswer}
	v := testVerifier(t, sts)
	orig := sign(t, testCreds, "eu-west-1", "srv-1", testNow.Add(-14*time.Minute))
	if _, _, err := v.verify(t.Context(), orig.Encode(), ""); err != nil {
		t.Fatal(err)
	}
	sts.status, sts.body = 403, `<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error></ErrorResponse>`
	edit := func(name, value string) string {
		r := callerid.Request{Headers: maps.Clone(orig.Headers), Authorization: orig.Authorization}
		r.Headers[name] = value
		return r.Encode()
	}
	for _, tt := range []struct{ name, enc string }{
		{"fresher date", edit("x-amz-date", testNow.Format(callerid.DateFormat))},
		{"another session token", edit("x-amz-security-token", "tok2")},
	} {
		_, _, err := v.verify(t.Context(), tt.enc, "")
		wantRefusal(t, err, "28P01", "identity-refused", "SignatureDoesNotMatch")
	}
	if n := sts.calls.Load(); n != 3 {
		t.Errorf("STS calls = %d, want 3: the original and each edit", n)
	}
	v.now = func() time.Time { return testNow.Add(2 * time.Minute) } // the original is 16 minutes old, its answer still cached
	_, _, err := v.verify(t.Context(), edit("x-amz-date", testNow.Format(callerid.DateFormat)), "")
	wantRefusal(t, err, "28P01", "identity-refused", "")
}

// The cache holds at most its size, dropping expired answers first.
func TestIdentityCacheIsBounded(t *testing.T) {
	c := newIdentityCache(3, time.Minute)
	fetch := func() (*discovery.Principal, error) { return &discovery.Principal{ARN: "arn:aws:iam::1:user/u"}, nil }
	for i, sig := range []string{"a", "b", "c", "d", "e"} {
		c.get(t.Context(), identityKey{"K", "S", sig}, testNow.Add(time.Duration(i)*40*time.Second), fetch)
		if len(c.entries) > 3 {
			t.Fatalf("after %d answers the cache holds %d, want at most 3", i+1, len(c.entries))
		}
	}
	if _, ok := c.entries[identityKey{"K", "S", "e"}]; !ok {
		t.Error("the newest answer was not kept")
	}
	if _, ok := c.entries[identityKey{"K", "S", "a"}]; ok {
		t.Error("an expired answer outlived a full cache")
	}
}
