// Package server is the VPC side of rdsproxy. For every accepted
// connection it sniffs the first bytes (HTTP for GET /v1/targets, else the
// PostgreSQL startup), negotiates TLS with the client when it has a
// certificate, resolves the requested target in the current discovery
// snapshot (never dialing anything else), pre-validates the client's IAM
// token, dials the target over verify-full TLS, completes the startup
// exchange on the client's behalf, and hands both connections to the byte
// relay. It remembers each session's BackendKeyData so that a
// CancelRequest arriving on a new connection reaches the right upstream.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
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
	// MaxSessions caps concurrent sessions (default 1000); clients over
	// the cap get SQLSTATE 53300.
	MaxSessions int
	// MaxPending caps connections still in their startup phase (default 512).
	MaxPending int
	// StartupTimeout bounds the client's startup phase (default 10s).
	StartupTimeout time.Duration
	// DialTimeout bounds the upstream dial, TLS handshake and
	// authentication exchange (default 10s).
	DialTimeout time.Duration
	// MaxStartupSize bounds a startup packet (default 10000 bytes).
	MaxStartupSize int
	// TokenSkew is the clock skew tolerated when checking tokens (default 2m).
	TokenSkew time.Duration
	// KeepAlive is the TCP keepalive period on both sides (default 30s).
	KeepAlive time.Duration
	// Metrics, when set, receives session, auth, dial and cancel metrics.
	Metrics *Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

func (c *Config) setDefaults() {
	setDefault(&c.MaxSessions, 1000)
	setDefault(&c.MaxPending, 512)
	setDefault(&c.StartupTimeout, 10*time.Second)
	setDefault(&c.DialTimeout, 10*time.Second)
	setDefault(&c.MaxStartupSize, pgwire.DefaultMaxStartupSize)
	setDefault(&c.TokenSkew, 2*time.Minute)
	setDefault(&c.KeepAlive, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
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
	if c.MaxSessions < 0 || c.MaxPending < 0 || c.MaxStartupSize < 8 {
		return errors.New("server: limits must be positive")
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

	sessions chan struct{} // one token per live session
	pending  chan struct{} // one token per connection in startup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		cancels:  cancelMap{m: make(map[pgwire.CancelKey]cancelEntry)},
		tlsSess:  tls.NewLRUClientSessionCache(1024),
		dialer:   net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.KeepAlive},
		sessions: make(chan struct{}, cfg.MaxSessions),
		pending:  make(chan struct{}, cfg.MaxPending),
		conns:    make(map[net.Conn]struct{}),
	}, nil
}

// Serve accepts connections on ln until ctx ends, then closes ln and every
// open connection and returns once all of them are finished.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	backoff := newAcceptBackoff(s.log)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			if backoff.wait(ctx, err) {
				continue
			}
			acceptErr = fmt.Errorf("accept: %w", err)
			break
		}
		backoff.reset()
		s.start(ctx, c)
	}
	s.closeAll()
	s.wg.Wait()
	return acceptErr
}

// start runs one connection in its own goroutine, or refuses it at once
// when too many connections are still in their startup phase.
func (s *Server) start(ctx context.Context, c net.Conn) {
	select {
	case s.pending <- struct{}{}:
	default:
		s.log.Warn("connection refused: too many connections in startup", "remote", c.RemoteAddr().String(), "max_pending", s.cfg.MaxPending)
		c.Close()
		return
	}
	s.track(c, true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.track(c, false)
		defer c.Close()
		s.handle(ctx, c)
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

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// releasePending frees the startup slot of a connection; safe to call once.
func (s *Server) releasePending() { <-s.pending }

// acceptBackoff waits after temporary accept errors (EMFILE, ENFILE…),
// logging at most once per second.
type acceptBackoff struct {
	log     *slog.Logger
	delay   time.Duration
	lastLog time.Time
}

func newAcceptBackoff(log *slog.Logger) *acceptBackoff { return &acceptBackoff{log: log} }

func (b *acceptBackoff) reset() { b.delay = 0 }

func (b *acceptBackoff) wait(ctx context.Context, err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) && !isResourceError(err) {
		return false
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	if now := time.Now(); now.Sub(b.lastLog) >= time.Second {
		b.lastLog = now
		b.log.Error("accept failed; backing off", "err", err, "delay", b.delay)
	}
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
