package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// Config is everything the server needs. Zero durations and sizes take
// the defaults documented on each field. It follows the convention every
// library package of rdsproxy uses: a plain struct whose zero fields mean
// "the default", a pure Validate that reports the first unusable field as
// a *ConfigError, and a constructor (New) that validates and then fills in
// the defaults on its own copy.
type Config struct {
	Targets Targets
	// DialOverrides maps a target endpoint (host:port) to the address to
	// dial instead, curl --resolve style. TLS still verifies the endpoint host.
	DialOverrides map[string]string
	// RootCAs verifies upstream certificates; see RootCAs().
	RootCAs *x509.CertPool
	// ClientTLS, when set, lets clients upgrade with SSLRequest.
	ClientTLS *tls.Config
	// RequireTLS refuses clients that do not upgrade with SSLRequest, so
	// tokens never cross the network in clear. It needs ClientTLS.
	RequireTLS bool
	// MaxSessions caps concurrent sessions (default 1000); clients over
	// the cap get SQLSTATE 53300. A connection takes a session slot only
	// once its token has passed the pre-check (or, for passthrough
	// targets, once it named a target and is about to authenticate).
	MaxSessions int
	// MaxPending caps connections still in their startup phase (default
	// 512). At the cap, the one that has waited longest for its client is
	// evicted with 53300 to make room (the newcomer, when none waits for
	// its client): an honest client sends its startup at once, so idle
	// connections cannot lock it out.
	MaxPending int
	// MaxPendingPerSource caps them per client IP address (default 256),
	// evicting among that source's connections the same way, so one source
	// cannot push out the others. Behind SSM and Kubernetes every client shares one address.
	MaxPendingPerSource int
	// FirstByteTimeout bounds the wait for a new connection's first
	// packet, and PasswordTimeout the wait for the token once it was asked
	// for (default 5s each). StartupTimeout bounds the client's whole
	// startup phase, TLS handshake included (default 10s).
	FirstByteTimeout time.Duration
	PasswordTimeout  time.Duration
	StartupTimeout   time.Duration
	// DialTimeout bounds the upstream TCP dial and TLS handshake (default
	// 10s); LoginTimeout bounds the whole upstream login, dial included,
	// up to ReadyForQuery (default 30s: a busy database takes its time).
	DialTimeout  time.Duration
	LoginTimeout time.Duration
	// MaxStartupSize bounds a startup packet (default 10000 bytes).
	MaxStartupSize int
	// AuthFailures bounds failed upstream logins per access key and source.
	AuthFailures AuthFailureLimit
	// RefusalLogRate and RefusalLogBurst bound the audit lines written for
	// refused connections (default 20 a second, bursts of 50); the rest
	// are counted in rdsproxy_log_lines_suppressed_total and in the next
	// line's "suppressed" attribute. Lines for sessions that were relayed
	// are never suppressed.
	RefusalLogRate  float64
	RefusalLogBurst int
	// TokenSkew is the clock skew tolerated when checking tokens (default 2m).
	TokenSkew time.Duration
	// KeepAlive is the TCP keepalive period on both sides (default 30s).
	KeepAlive time.Duration
	// DrainTimeout is how long Serve lets running sessions finish after
	// its context ends (default 30s); sessions still running then get
	// FATAL 57P01 and are closed.
	DrainTimeout time.Duration
	// RevokeSessions ends, with FATAL 57P01, running sessions that the
	// current snapshot no longer admits: their target is withheld by the
	// tag rules, or no longer lists their user (rdsproxy:users) or caller
	// (rdsproxy:principals). Off, a change applies to new sessions only,
	// as pg_hba.conf and IAM policies do. See admission.
	RevokeSessions bool
	// NoStriping answers every offer of the striped transport
	// (internal/stripe) with the raw stream, as a server from before it.
	NoStriping bool
	// MaxStripes caps the stripes one striped connection spreads over
	// (default and most: contract.MaxTransportStripes). Each stripe holds
	// up to 128 KiB queued towards the client, and each connection up to
	// its 2 MiB flow-control window received and not yet relayed.
	MaxStripes int
	// Identity, when set, verifies each caller's signed
	// sts:GetCallerIdentity request before any dial, names the caller in
	// the audit line, and applies targets' principal rules. Nil leaves it
	// off: identities are ignored, and targets with a principal rule admit
	// nobody.
	Identity *IdentityConfig
	// Metrics, when set, receives session, auth, dial and cancel metrics.
	Metrics *Metrics
	Logger  *slog.Logger
	// Audit receives the audit trail, one "session end" line per
	// session, at Info whatever Logger's level: an operator who turns the
	// logs down to warnings keeps it. Nil: Logger.
	Audit *slog.Logger
	// Now is the clock for token validity and audit times (tests move
	// it); socket deadlines and rate limits always use the real clock.
	Now func() time.Time
}

// ConfigError is a configuration field the server cannot use. Field is
// the Go field's name ("DialTimeout", "Identity.Endpoint"), so that the
// caller can name its own flag or setting when it reports the error.
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string { return "server: " + e.Field + ": " + e.Problem }

// Validate reports the first field the server cannot use, reading zero
// fields as their defaults. It changes nothing.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Targets == nil:
		return &ConfigError{"Targets", "no target source"}
	case c.RootCAs == nil:
		return &ConfigError{"RootCAs", "no root CAs for upstream TLS"}
	case c.RequireTLS && c.ClientTLS == nil:
		return &ConfigError{"RequireTLS", "requiring TLS needs a certificate (ClientTLS)"}
	case c.MaxStartupSize < minStartupSize:
		return &ConfigError{"MaxStartupSize", fmt.Sprintf("%d bytes is below %d: the startup packets of ordinary clients (JDBC's is about 300 bytes, more with options) would be refused", c.MaxStartupSize, minStartupSize)}
	case c.Identity != nil && c.MaxStartupSize < minStartupSizeIdentity:
		return &ConfigError{"MaxStartupSize", fmt.Sprintf("%d bytes is below %d: with caller identity, rdsproxy connect's startup packet carries an identity of up to %d bytes", c.MaxStartupSize, minStartupSizeIdentity, callerid.MaxEncoded)}
	case c.RefusalLogRate < 0 || c.RefusalLogBurst < 0:
		return &ConfigError{"RefusalLogRate", "the refusal log rate and burst must not be negative"}
	case c.AuthFailures.PerKey < 0 || c.AuthFailures.PerKeyRate < 0 || c.AuthFailures.PerSource < 0 ||
		c.AuthFailures.PerSourceRate < 0 || c.AuthFailures.MaxTracked < 0:
		return &ConfigError{"AuthFailures", "the failed-login budgets must not be negative"}
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"MaxSessions", c.MaxSessions}, {"MaxPending", c.MaxPending}, {"MaxPendingPerSource", c.MaxPendingPerSource}, {"MaxStripes", c.MaxStripes}} {
		if f.n < 1 {
			return &ConfigError{f.name, fmt.Sprintf("%d is not a positive limit", f.n)}
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"FirstByteTimeout", c.FirstByteTimeout}, {"PasswordTimeout", c.PasswordTimeout}, {"StartupTimeout", c.StartupTimeout},
		{"DialTimeout", c.DialTimeout}, {"LoginTimeout", c.LoginTimeout}, {"TokenSkew", c.TokenSkew},
		{"KeepAlive", c.KeepAlive}, {"DrainTimeout", c.DrainTimeout}} {
		if f.d < 0 {
			return &ConfigError{f.name, fmt.Sprintf("%s is negative", f.d)}
		}
	}
	if c.MaxStripes > contract.MaxTransportStripes {
		return &ConfigError{"MaxStripes", fmt.Sprintf("%d is more than %d", c.MaxStripes, contract.MaxTransportStripes)}
	}
	if c.DialTimeout > c.LoginTimeout {
		return &ConfigError{"DialTimeout", fmt.Sprintf("%s must not exceed the login timeout (%s), which includes the dial", c.DialTimeout, c.LoginTimeout)}
	}
	for _, endpoint := range slices.Sorted(maps.Keys(c.DialOverrides)) {
		addr := c.DialOverrides[endpoint]
		if _, _, err := discovery.SplitEndpoint(endpoint); err != nil {
			return &ConfigError{"DialOverrides", fmt.Sprintf("%s=%s: %v", endpoint, addr, err)}
		}
		if _, _, err := discovery.SplitEndpoint(addr); err != nil {
			return &ConfigError{"DialOverrides", fmt.Sprintf("%s=%s: the address to dial must be host:port, with a port from 1 to 65535", endpoint, addr)}
		}
	}
	if c.Identity != nil {
		return c.Identity.Validate()
	}
	return nil
}

// minStartupSize is the smallest MaxStartupSize: below it, clients that
// send a few options or a long application_name are refused. With caller
// identity, rdsproxy connect's startup carries the identity as well.
const (
	minStartupSize         = 1024
	minStartupSizeIdentity = callerid.MaxEncoded + minStartupSize
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	setDefault(&c.MaxSessions, 1000)
	setDefault(&c.MaxPending, 512)
	setDefault(&c.MaxPendingPerSource, 256)
	setDefault(&c.FirstByteTimeout, 5*time.Second)
	setDefault(&c.PasswordTimeout, 5*time.Second)
	setDefault(&c.StartupTimeout, 10*time.Second)
	setDefault(&c.DialTimeout, 10*time.Second)
	setDefault(&c.LoginTimeout, 30*time.Second)
	setDefault(&c.RefusalLogRate, 20)
	setDefault(&c.RefusalLogBurst, 50)
	c.AuthFailures = c.AuthFailures.withDefaults()
	setDefault(&c.MaxStartupSize, pgwire.DefaultMaxStartupSize)
	setDefault(&c.TokenSkew, 2*time.Minute)
	setDefault(&c.KeepAlive, 30*time.Second)
	setDefault(&c.DrainTimeout, 30*time.Second)
	setDefault(&c.MaxStripes, contract.MaxTransportStripes)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Audit == nil {
		c.Audit = c.Logger
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Identity != nil {
		id := c.Identity.withDefaults()
		c.Identity = &id
	}
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
