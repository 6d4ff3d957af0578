// Package server is the VPC side of rdsproxy. For every accepted
// connection it sniffs the first bytes (HTTP for GET /v1/targets, else the
// PostgreSQL startup), negotiates TLS with the client when it has a
// certificate, resolves the requested target in the current discovery
// snapshot (never dialing anything else), pre-validates the client's IAM
// token, has STS verify the caller's signed identity (identity*.go) and
// applies the target's principal rule, dials the target over verify-full TLS, completes the startup
// exchange on the client's behalf, and hands both connections to the byte
// relay. It remembers each session's BackendKeyData so that a
// CancelRequest arriving on a new connection reaches the right upstream.
//
// docs/architecture.md §5 follows one connection through it, and §6
// covers operating it.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/accept"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/relay"
)

// Targets gives the current discovery snapshot; nil means none loaded yet.
type Targets interface {
	Current() *discovery.Snapshot
}

// Config is everything the server needs. Zero durations and sizes take
// the defaults documented on each field.
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
	// Identity, when set, verifies each caller's signed
	// sts:GetCallerIdentity request before any dial, names the caller in
	// the audit line, and applies targets' principal rules. Nil leaves it
	// off: identities are ignored, and targets with a principal rule admit
	// nobody.
	Identity *IdentityConfig
	// Metrics, when set, receives session, auth, dial and cancel metrics.
	Metrics *Metrics
	Logger  *slog.Logger
	// Now is the clock for token validity and audit times (tests move
	// it); socket deadlines and rate limits always use the real clock.
	Now func() time.Time
}

func (c *Config) setDefaults() {
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
	c.AuthFailures.setDefaults()
	setDefault(&c.MaxStartupSize, pgwire.DefaultMaxStartupSize)
	setDefault(&c.TokenSkew, 2*time.Minute)
	setDefault(&c.KeepAlive, 30*time.Second)
	setDefault(&c.DrainTimeout, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Identity != nil {
		id := *c.Identity
		id.setDefaults()
		c.Identity = &id
	}
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports the first configuration error.
func (c *Config) Validate() error {
	if c.Targets == nil {
		return errors.New("server: no target source")
	}
	if c.RootCAs == nil {
		return errors.New("server: no root CAs for upstream TLS")
	}
	if c.MaxSessions < 0 || c.MaxPending < 0 || c.MaxPendingPerSource < 0 || c.MaxStartupSize < 8 {
		return errors.New("server: limits must be positive")
	}
	if c.RequireTLS && c.ClientTLS == nil {
		return errors.New("server: RequireTLS needs a certificate (ClientTLS)")
	}
	if c.Identity != nil {
		if err := c.Identity.Validate(); err != nil {
			return err
		}
	}
	if c.DialTimeout > c.LoginTimeout {
		return fmt.Errorf("server: the dial timeout (%s) must not exceed the login timeout (%s)", c.DialTimeout, c.LoginTimeout)
	}
	return nil
}

// Server accepts client connections and relays sessions.
type Server struct {
	cfg     Config
	log     *slog.Logger
	cancels cancelMap
	tlsSess tls.ClientSessionCache
	dialer  net.Dialer

	sessions chan struct{}     // one token per live session
	pending  *pendingSet       // connections that have not proved themselves yet
	failures *failureBudgets   // failed upstream logins by access key and source
	logs     *logBudget        // audit lines of refused connections
	evicts   *rate.Sometimes   // logs of evictions, at most one a second
	identity *identityVerifier // nil when Config.Identity is

	mu       sync.Mutex
	conns    map[net.Conn]struct{}       // connections not relaying yet
	relays   map[*relay.Session]struct{} // sessions being relayed
	wg       sync.WaitGroup
	draining atomic.Bool
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var identity *identityVerifier
	if cfg.Identity != nil {
		identity = newIdentityVerifier(*cfg.Identity, cfg.Now, cfg.Metrics)
	}
	return &Server{
		identity: identity,
		cfg:      cfg,
		log:      cfg.Logger,
		cancels:  cancelMap{m: make(map[pgwire.CancelKey]*discovery.Target)},
		tlsSess:  tls.NewLRUClientSessionCache(1024),
		dialer:   net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.KeepAlive},
		sessions: make(chan struct{}, cfg.MaxSessions),
		pending:  newPendingSet(cfg.MaxPending, cfg.MaxPendingPerSource),
		failures: newFailureBudgets(cfg.AuthFailures),
		logs:     newLogBudget(cfg.RefusalLogRate, cfg.RefusalLogBurst),
		evicts:   &rate.Sometimes{Interval: time.Second},
		conns:    make(map[net.Conn]struct{}),
		relays:   make(map[*relay.Session]struct{}),
	}, nil
}

// Serve accepts connections on ln until ctx ends. Then it drains: it
// stops accepting, closes connections still in their startup, lets
// running sessions finish for up to DrainTimeout, ends the rest with FATAL
// 57P01, and returns once every connection is finished.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	err := accept.Serve(ctx, ln, s.log, func(c net.Conn) {
		s.start(ctx, c)
		// Let the new connection's goroutine read what its client sent
		// before accepting more: under a flood, connections the server has
		// not got to yet cannot be told from idle ones, and a busy accept
		// loop would fill the pending caps with them.
		runtime.Gosched()
	})
	s.drain()
	return err
}

// Draining reports whether Serve has stopped accepting (readiness false).
func (s *Server) Draining() bool { return s.draining.Load() }

// drain ends everything Serve started; see Serve.
func (s *Server) drain() {
	s.draining.Store(true)
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	active := len(s.relays)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	if active > 0 {
		s.log.Info("draining", "sessions", active, "timeout", s.cfg.DrainTimeout)
	}
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	final := shutdownError().AppendTo(nil)
	s.mu.Lock()
	s.log.Warn("drain timeout: ending sessions", "sessions", len(s.relays))
	for r := range s.relays {
		r.Stop(final)
	}
	s.mu.Unlock()
	<-done
}

func shutdownError() *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeAdminShutdown, contract.ReasonShutdown,
		"rdsproxy: terminating connection because the server is shutting down").
		WithHint("Reconnect; another rdsproxy server will take the session.")
}

// start runs one connection in its own goroutine. It never refuses: at
// the pending caps the longest-waiting startup is evicted instead.
func (s *Server) start(ctx context.Context, c net.Conn) {
	pc, evicted := s.pending.add(c)
	if evicted != nil {
		s.evicts.Do(func() {
			s.log.Warn("pending caps reached: closing a connection still in its startup phase", "remote", evicted.conn.RemoteAddr().String(),
				"max_pending", s.cfg.MaxPending, "max_pending_per_source", s.cfg.MaxPendingPerSource)
		})
	}
	s.track(c, true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.track(c, false)
		defer c.Close()
		defer s.pending.remove(pc)
		s.handle(ctx, c, pc)
	}()
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// promote moves a connection from startup to the relaying set. It fails
// when the server is already draining.
func (s *Server) promote(c net.Conn, r *relay.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	delete(s.conns, c)
	s.relays[r] = struct{}{}
	return true
}

func (s *Server) retire(r *relay.Session) {
	s.mu.Lock()
	delete(s.relays, r)
	s.mu.Unlock()
}
