package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// IdentityConfig turns on verified caller identity: every client sends a
// sts:GetCallerIdentity request signed with the credentials of its IAM
// token (see package callerid), and the server has STS verify it before
// it dials any database.
type IdentityConfig struct {
	// ServerID names this server. Clients learn it from GET /v1/targets
	// and sign it into X-Rdsproxy-Server-Id, so an identity captured by
	// one server cannot be replayed to another. Replicas behind one
	// address (a Kubernetes Service) should share it.
	ServerID string
	// Region is the STS region clients sign for and the server calls.
	Region string
	// Endpoint is where the server sends the requests (default
	// https://sts.REGION.amazonaws.com; the sandbox points it at its
	// emulator). Never a place the client chose: the client's request is
	// rebuilt for this endpoint from its signed headers alone.
	Endpoint string
	// Optional admits connections that carry no identity (clients that
	// predate it). By default they are refused with 28000.
	Optional bool
	// MaxAge is how old an identity's X-Amz-Date may be (default 15m, as
	// STS itself); Skew how far in the future (default 2m).
	MaxAge time.Duration
	Skew   time.Duration
	// CacheTTL is how long a verified answer is reused for the same
	// signed request (default 5m), CacheSize how many are kept (default 10000).
	CacheTTL  time.Duration
	CacheSize int
	// Timeout bounds one STS call (default 5s).
	Timeout time.Duration
	// HTTP sends the requests (default an http.Client).
	HTTP HTTPDoer
}

// HTTPDoer sends one HTTP request; *http.Client is one.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

var _ HTTPDoer = (*http.Client)(nil)

// withDefaults returns c with every zero field set to its default.
func (c IdentityConfig) withDefaults() IdentityConfig {
	setDefault(&c.MaxAge, 15*time.Minute)
	setDefault(&c.Skew, 2*time.Minute)
	setDefault(&c.CacheTTL, 5*time.Minute)
	setDefault(&c.CacheSize, 10000)
	setDefault(&c.Timeout, 5*time.Second)
	if c.Endpoint == "" && c.Region != "" {
		c.Endpoint = "https://" + callerid.STSHost(c.Region)
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: c.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return c
}

// Validate reports the first field identity checks cannot use, reading
// zero fields as their defaults. It changes nothing.
func (c IdentityConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.ServerID == "":
		return &ConfigError{"Identity.ServerID", "identity needs this server's id"}
	case c.Region == "":
		return &ConfigError{"Identity.Region", "identity needs an STS region"}
	case c.CacheSize < 1 || c.MaxAge <= 0 || c.CacheTTL <= 0 || c.Skew < 0 || c.Timeout <= 0:
		return &ConfigError{"Identity", "the cache size, max age, skew, TTL and timeout must be positive"}
	}
	if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &ConfigError{"Identity.Endpoint", fmt.Sprintf("%q is not an http(s) URL", c.Endpoint)}
	}
	return nil
}

// Info is what GET /v1/targets tells clients.
func (c IdentityConfig) Info() *callerid.ServerInfo {
	return &callerid.ServerInfo{ServerID: c.ServerID, Region: c.Region, Required: !c.Optional}
}

// identityVerifier checks encoded identities: first everything that needs
// no AWS call, then the cache, then STS.
type identityVerifier struct {
	cfg    IdentityConfig
	host   string // the Host every request must have signed
	cache  *identityCache
	now    func() time.Time
	m      *Metrics
	outage stsOutage
}

func newIdentityVerifier(cfg IdentityConfig, now func() time.Time, m *Metrics, log *slog.Logger) *identityVerifier {
	return &identityVerifier{cfg: cfg, host: callerid.STSHost(cfg.Region), cache: newIdentityCache(cfg.CacheSize, cfg.CacheTTL), now: now, m: m,
		outage: stsOutage{log: log, endpoint: cfg.Endpoint}}
}

// verify returns the caller an encoded identity proves. keyID, when not
// empty, is the IAM token's access key, which must have signed the
// identity too. Errors are *pgwire.Error; authKey is the access key the
// identity names (for failure budgets), also on error.
func (v *identityVerifier) verify(ctx context.Context, encoded, keyID string) (p *discovery.Principal, authKey string, err error) {
	req, auth, err := v.precheck(encoded, keyID)
	if err != nil {
		v.m.identity(reasonOf(err))
		return nil, auth.AccessKeyID, err
	}
	key := identityKey{accessKey: auth.AccessKeyID, serverID: v.cfg.ServerID, signed: signedDigest(req, auth)}
	p, hit, err := v.cache.get(ctx, key, v.now(), func() (*discovery.Principal, error) {
		p, err := v.callSTS(ctx, req, auth)
		v.outage.note(err, v.now())
		return p, err
	})
	switch {
	case err != nil:
		v.m.identity(reasonOf(err))
	case hit:
		v.m.identity("verified-cache")
	default:
		v.m.identity("verified-sts")
	}
	return p, auth.AccessKeyID, err
}

// precheck checks what needs no AWS call: shape, region, host, signed
// headers, date, server id and access key.
func (v *identityVerifier) precheck(encoded, keyID string) (callerid.Request, callerid.Authorization, error) {
	req, err := callerid.Decode(encoded)
	if err != nil {
		return req, callerid.Authorization{}, identityMalformed(err.Error())
	}
	auth, err := callerid.ParseAuthorization(req.Authorization)
	if err != nil {
		return req, auth, identityMalformed(err.Error())
	}
	if err := v.checkSigned(req, auth); err != nil {
		return req, auth, err
	}
	if err := v.checkDate(req, auth); err != nil {
		return req, auth, err
	}
	if got := req.Headers[strings.ToLower(callerid.ServerIDHeader)]; got != v.cfg.ServerID {
		return req, auth, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity-wrong-server",
			"rdsproxy: the caller identity was signed for server %q, not for this server (%q)", clip(got), v.cfg.ServerID).
			WithHint("An identity is bound to one server; `rdsproxy connect` signs one for the server it reaches (reconnect if the server changed).")
	}
	if keyID != "" && auth.AccessKeyID != keyID {
		return req, auth, pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity-key-mismatch",
			"rdsproxy: the caller identity was signed with access key %s but the IAM token with %s", clip(auth.AccessKeyID), clip(keyID)).
			WithHint("Sign the identity and the token with the same AWS credentials; `rdsproxy connect` does.")
	}
	return req, auth, nil
}

// checkSigned: the request was signed for this server's STS region and
// host, and signs the date and the server id; every signed header travels.
func (v *identityVerifier) checkSigned(req callerid.Request, auth callerid.Authorization) error {
	if auth.Service != "sts" || auth.Region != v.cfg.Region {
		return identityMalformed(fmt.Sprintf("it is signed for %.20s in %.30s, but this server verifies identities with sts in %s",
			auth.Service, auth.Region, v.cfg.Region))
	}
	for _, h := range []string{"host", "x-amz-date", strings.ToLower(callerid.ServerIDHeader)} {
		if !auth.Signs(h) {
			return identityMalformed("its signature does not cover " + h)
		}
	}
	for _, h := range auth.SignedHeaders {
		if _, ok := req.Headers[h]; !ok && h != "content-type" && h != "content-length" {
			return identityMalformed(fmt.Sprintf("signed header %.40q is missing", h))
		}
	}
	if req.Headers["host"] != v.host {
		return identityMalformed(fmt.Sprintf("it is signed for host %.80q, not %s", req.Headers["host"], v.host))
	}
	return nil
}

func (v *identityVerifier) checkDate(req callerid.Request, auth callerid.Authorization) error {
	at, err := req.Date()
	if err != nil {
		return identityMalformed(err.Error())
	}
	if auth.Date != at.Format("20060102") {
		return identityMalformed("its credential scope date differs from its X-Amz-Date")
	}
	now := v.now()
	if age := now.Sub(at); age > v.cfg.MaxAge {
		return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity-expired",
			"rdsproxy: the caller identity expired: it was signed %s ago and lives %s", age.Round(time.Second), v.cfg.MaxAge).
			WithHint("`rdsproxy connect` signs a fresh identity every few minutes; check the laptop's clock.")
	}
	if ahead := at.Sub(now); ahead > v.cfg.Skew {
		return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity-expired",
			"rdsproxy: the caller identity is dated %s in the future", ahead.Round(time.Second)).
			WithHint("Check the laptop's clock.")
	}
	return nil
}

func identityMalformed(why string) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeProtocolViolation, "identity-malformed", "rdsproxy: the caller identity (%s) is malformed: %s", callerid.Param, why).
		WithHint("Connect through a current `rdsproxy connect`; it signs the identity for you.")
}

func identityMissing() *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "identity-missing",
		"rdsproxy: this server requires a verified caller identity, and the connection carries none").
		WithHint("Upgrade rdsproxy on this machine (`rdsproxy connect` sends one), or ask the operator for --require-identity=false during the upgrade.")
}

func principalRefused(t *discovery.Target, p *discovery.Principal) *pgwire.Error {
	if p == nil {
		return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "principal-unknown",
			"rdsproxy: target %q admits only verified AWS principals, and the connection carries no identity", t.Name).
			WithHint("Connect through a current `rdsproxy connect`, which proves who you are.")
	}
	return pgwire.Errorf(pgwire.CodeInvalidAuthSpec, "principal-not-allowed",
		"rdsproxy: target %q does not admit %s", t.Name, clipARN(p.ARN)).
		WithHint("The target's rdsproxy:principals tag lists the IAM roles and users it admits.")
}

func reasonOf(err error) string {
	var pe *pgwire.Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return "error"
}

// clipARN keeps ARNs readable in logs and errors while bounding them.
func clipARN(s string) string {
	if len(s) <= 256 {
		return s
	}
	return s[:256] + "…"
}
