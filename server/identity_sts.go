package server

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

const maxSTSResponse = 64 << 10

// callSTS rebuilds the client's request for the configured endpoint (the
// fixed body, the signed headers and nothing else, the Authorization) and
// asks STS who signed it.
func (v *identityVerifier) callSTS(ctx context.Context, r callerid.Request, auth callerid.Authorization) (*discovery.Principal, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(v.cfg.Endpoint, "/")+"/", strings.NewReader(callerid.Body))
	if err != nil {
		return nil, stsUnreachable(err)
	}
	req.Host = v.host
	req.Header.Set("Content-Type", callerid.ContentType)
	for _, k := range auth.SignedHeaders {
		if k != "host" && k != "content-type" && k != "content-length" {
			req.Header.Set(k, r.Headers[k])
		}
	}
	req.Header.Set("Authorization", r.Authorization)
	start := time.Now()
	resp, err := v.cfg.HTTP.Do(req)
	v.m.observeSTS(time.Since(start))
	if err != nil {
		return nil, &stsFailure{refusal: stsUnreachable(err), cause: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSTSResponse))
	if err != nil {
		return nil, stsUnreachable(fmt.Errorf("read answer: %w", err))
	}
	return parseSTSAnswer(resp.StatusCode, body)
}

// parseSTSAnswer turns STS's XML into a principal, or a refusal (4xx with
// an ErrorResponse) or an outage (anything else).
func parseSTSAnswer(status int, body []byte) (*discovery.Principal, error) {
	if status == http.StatusOK {
		var ok struct {
			Arn     string `xml:"GetCallerIdentityResult>Arn"`
			Account string `xml:"GetCallerIdentityResult>Account"`
		}
		if err := xml.Unmarshal(body, &ok); err != nil || ok.Arn == "" {
			return nil, stsUnreachable(errors.New("STS answered 200 without a caller ARN"))
		}
		p, err := discovery.ParsePrincipal(ok.Arn)
		if err != nil || p.Account != ok.Account {
			return nil, stsUnreachable(fmt.Errorf("STS answered an unusable caller: %v", err))
		}
		return &p, nil
	}
	var e struct {
		Code    string `xml:"Error>Code"`
		Message string `xml:"Error>Message"`
	}
	if status >= 400 && status < 500 && xml.Unmarshal(body, &e) == nil && e.Code != "" && e.Code != "Throttling" {
		return nil, pgwire.Errorf(pgwire.CodeInvalidPassword, "identity-refused",
			"rdsproxy: AWS STS refused the caller identity: %s: %s", clip(e.Code), clipARN(e.Message)).
			WithHint("The identity must be signed with valid AWS credentials, the same as the IAM token's; `rdsproxy connect` does that.")
	}
	return nil, stsUnreachable(fmt.Errorf("STS answered HTTP %d %s", status, clip(e.Code)))
}

// stsOutage logs the server's calls to STS failing, once per streak: the
// first failure at Warn with its error (the callers only hear that STS is
// unreachable), and the first answer after it at Info.
type stsOutage struct {
	log      *slog.Logger
	endpoint string // where the server sends the calls
	mu       sync.Mutex
	failed   int       // calls failed since STS last answered
	since    time.Time // when the streak began
}

// note records one call's outcome: err from callSTS.
func (o *stsOutage) note(err error, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if reasonOf(err) != contract.ReasonIdentitySTSUnreachable {
		if o.failed > 0 {
			o.log.Info("AWS STS answers again: caller identities are verified", "failures", o.failed, "since", o.since)
		}
		o.failed = 0
		return
	}
	if o.failed == 0 {
		o.since = now
		if f := (*stsFailure)(nil); errors.As(err, &f) {
			err = f.cause
		}
		o.log.Warn("AWS STS is unreachable or failing: connections whose caller identity is not cached are refused (08001) until it answers; "+
			"check the server's route to it (the sts VPC endpoint, or the internet) and --sts-endpoint", "endpoint", o.endpoint, "err", err)
	}
	o.failed++
}

// stsFailure is the refusal of a request to STS that failed, with its
// cause, which names the endpoint: for the server's log, not the caller.
type stsFailure struct {
	refusal *pgwire.Error
	cause   error
}

func (f *stsFailure) Error() string { return f.refusal.Error() }
func (f *stsFailure) Unwrap() error { return f.refusal }

// stsUnreachable is the refusal when STS does not answer; err is why. A
// failed request is named by its kind only: its error names the endpoint,
// its address or the resolver, which are the operator's (the server's log
// has them).
func stsUnreachable(err error) *pgwire.Error {
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = errors.New(requestFailure(ue.Err))
	}
	return pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonIdentitySTSUnreachable,
		"rdsproxy: cannot verify the caller identity: AWS STS is unreachable or failing (%v)", err).
		WithHint("Try again in a moment; if it lasts, the operator should check the server's route to STS (the sts VPC endpoint).")
}

// requestFailure says what kind of failure err, of an HTTP request, is.
func requestFailure(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return "its name did not resolve"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return "its TLS certificate was not accepted"
	}
	return "the request failed"
}
