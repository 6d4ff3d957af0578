package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// STSConfig configures the STS emulator.
type STSConfig struct {
	Principals []STSPrincipal   // default: STSPrincipals()
	Region     string           // the region requests must be signed for; default Region
	Now        func() time.Time // default time.Now
	Logger     *slog.Logger     // default: discard
}

// STS is an emulator of the regional AWS STS endpoint that answers
// sts:GetCallerIdentity as AWS does: it verifies the request's SigV4
// signature (header-signed POST) with its own code, checks the session
// token of temporary credentials and the 15-minute freshness of
// X-Amz-Date, and answers with the caller's ARN, user id and account in
// AWS's XML, or with AWS's error XML and status. It serves plain HTTP on
// loopback; the server reaches it through its STS endpoint override.
type STS struct {
	cfg   STSConfig
	byKey map[string]STSPrincipal
	ln    net.Listener
	hs    *http.Server
	done  chan struct{}
	calls atomic.Int64
}

// StartSTS listens on 127.0.0.1 (a free port) and serves until Close.
func StartSTS(ctx context.Context, cfg STSConfig) (*STS, error) {
	if cfg.Principals == nil {
		cfg.Principals = STSPrincipals()
	}
	if cfg.Region == "" {
		cfg.Region = Region
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &STS{cfg: cfg, byKey: make(map[string]STSPrincipal), done: make(chan struct{})}
	for _, p := range cfg.Principals {
		s.byKey[p.AccessKeyID] = p
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sts emulator: listen: %w", err)
	}
	s.ln = ln
	s.hs = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.hs.Serve(ln)
	}()
	return s, nil
}

// URL is the endpoint to give the server (http://127.0.0.1:PORT).
func (s *STS) URL() string { return "http://" + s.ln.Addr().String() }

// Calls counts the requests the emulator has answered, valid or not.
func (s *STS) Calls() int64 { return s.calls.Load() }

// Close stops the emulator and waits for it.
func (s *STS) Close() error {
	err := s.hs.Close()
	<-s.done
	return err
}

// stsError is one of STS's error answers.
type stsError struct {
	status        int
	code, message string
}

func (e *stsError) Error() string { return e.code + ": " + e.message }

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	p, err := s.verify(r)
	var se *stsError
	if errors.As(err, &se) {
		s.cfg.Logger.Debug("sts refused", "code", se.code, "msg", se.message)
		writeSTSError(w, se)
		return
	}
	if err != nil {
		writeSTSError(w, &stsError{http.StatusBadRequest, "InvalidRequest", err.Error()})
		return
	}
	s.cfg.Logger.Debug("sts GetCallerIdentity", "arn", p.ARN)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>%s</Arn>
    <UserId>%s</UserId>
    <Account>%s</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>%s</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`, xmlText(p.ARN), xmlText(p.UserID), STSAccount, requestID())
}

// verify authenticates r as AWS STS would and returns its caller.
func (s *STS) verify(r *http.Request) (STSPrincipal, error) {
	if r.Method != http.MethodPost || stsCanonicalURI(r.URL.Path) != "/" {
		return STSPrincipal{}, &stsError{http.StatusBadRequest, "InvalidAction", "only POST / is served by the sandbox"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		return STSPrincipal{}, err
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return STSPrincipal{}, &stsError{http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	a, err := parseSTSAuth(h)
	if err != nil {
		return STSPrincipal{}, &stsError{http.StatusBadRequest, "IncompleteSignature", err.Error()}
	}
	p, ok := s.byKey[a.key]
	if !ok || r.Header.Get("X-Amz-Security-Token") != p.SessionToken {
		return STSPrincipal{}, &stsError{http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	if err := s.checkScope(r, a); err != nil {
		return STSPrincipal{}, err
	}
	want, err := stsExpectedSignature(r, body, a, p.SecretAccessKey)
	if err != nil {
		return STSPrincipal{}, &stsError{http.StatusBadRequest, "IncompleteSignature", err.Error()}
	}
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return STSPrincipal{}, &stsError{http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "GetCallerIdentity" || form.Get("Version") != "2011-06-15" {
		return STSPrincipal{}, &stsError{http.StatusBadRequest, "InvalidAction", "Could not find operation for the sandbox: only GetCallerIdentity"}
	}
	return p, nil
}

// checkScope checks the credential scope and the request's freshness.
func (s *STS) checkScope(r *http.Request, a *stsAuth) error {
	amzDate := r.Header.Get("X-Amz-Date")
	at, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !stsSigns(a, "host") || !stsSigns(a, "x-amz-date") {
		return &stsError{http.StatusBadRequest, "IncompleteSignature", "the request must sign host and a valid X-Amz-Date"}
	}
	if a.service != "sts" || a.region != s.cfg.Region || a.date != amzDate[:8] {
		return &stsError{http.StatusForbidden, "SignatureDoesNotMatch",
			fmt.Sprintf("Credential should be scoped to a valid region and service: %s/sts", s.cfg.Region)}
	}
	now := s.cfg.Now().UTC()
	if now.Sub(at) > 15*time.Minute || at.Sub(now) > 15*time.Minute {
		return &stsError{http.StatusForbidden, "SignatureDoesNotMatch", fmt.Sprintf(
			"Signature expired: %s is now earlier than %s (%s - 15 min.)", amzDate,
			now.Add(-15*time.Minute).Format("20060102T150405Z"), now.Format("20060102T150405Z"))}
	}
	return nil
}

func stsSigns(a *stsAuth, h string) bool {
	for _, s := range a.signed {
		if s == h {
			return true
		}
	}
	return false
}

func writeSTSError(w http.ResponseWriter, e *stsError) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>%s</RequestId>
</ErrorResponse>
`, xmlText(e.code), xmlText(e.message), requestID())
}

func xmlText(s string) string {
	var b []byte
	w := &byteWriter{&b}
	xml.EscapeText(w, []byte(s))
	return string(b)
}

type byteWriter struct{ b *[]byte }

func (w *byteWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
