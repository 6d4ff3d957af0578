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
	"github.com/rdsproxy/rdsproxy/internal/stripe"
)

// Targets gives the current discovery snapshot; nil means none loaded yet.
type Targets interface {
	Current() *discovery.Snapshot
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
	codec    *stripe.Codec     // compression of striped connections; nil with NoStriping
	joins    joinTable         // striped connections that stripes may join
	aside    *relay.Budget     // what sessions set aside after cancels, all together

	mu       sync.Mutex
	conns    map[net.Conn]struct{}         // connections not relaying yet
	relays   map[*relay.Session]*admission // sessions being relayed
	wg       sync.WaitGroup
	draining atomic.Bool
	hurry    chan struct{} // closed by EndDrain
	hurryOne sync.Once
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var identity *identityVerifier
	if cfg.Identity != nil {
		identity = newIdentityVerifier(*cfg.Identity, cfg.Now, cfg.Metrics, cfg.Logger)
	}
	var codec *stripe.Codec
	if !cfg.NoStriping {
		var err error
		if codec, err = stripe.NewCodec(); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	return &Server{
		identity: identity,
		codec:    codec,
		cfg:      cfg,
		log:      cfg.Logger,
		cancels:  cancelMap{m: make(map[pgwire.CancelKey]cancelRoute)},
		aside:    relay.NewBudget(asideBudget),
		tlsSess:  tls.NewLRUClientSessionCache(1024),
		dialer:   net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.KeepAlive},
		sessions: make(chan struct{}, cfg.MaxSessions),
		hurry:    make(chan struct{}),
		pending:  newPendingSet(cfg.MaxPending, cfg.MaxPendingPerSource),
		failures: newFailureBudgets(cfg.AuthFailures),
		logs:     newLogBudget(cfg.RefusalLogRate, cfg.RefusalLogBurst),
		evicts:   &rate.Sometimes{Interval: time.Second},
		conns:    make(map[net.Conn]struct{}),
		relays:   make(map[*relay.Session]*admission),
	}, nil
}

// Serve accepts connections on ln until ctx ends. Then it drains: it
// stops accepting, closes connections still in their startup, lets
// running sessions finish for up to DrainTimeout, ends the rest with FATAL
// 57P01, and returns once every connection is finished. With
// RevokeSessions the sessions are checked against each new snapshot until
// then, the drain included.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.RevokeSessions {
		watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
		watched := make(chan struct{})
		go func() { defer close(watched); s.watchAdmissions(watchCtx) }()
		defer func() { stopWatch(); <-watched }()
	}
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

// EndDrain cuts the drain short: the sessions still running get their
// 57P01 now instead of at the end of DrainTimeout. Before the drain it
// makes the drain end at once.
func (s *Server) EndDrain() { s.hurryOne.Do(func() { close(s.hurry) }) }

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
		s.log.Info("draining", "sessions", active, "timeout", s.cfg.DrainTimeout.String())
	}
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	why := "drain timeout: ending sessions"
	select {
	case <-done:
		return
	case <-t.C:
	case <-s.hurry:
		why = "drain cut short: ending sessions"
	}
	final := shutdownError().AppendTo(nil)
	s.mu.Lock()
	s.log.Warn(why, "sessions", len(s.relays))
	for r := range s.relays {
		r.Stop(final)
	}
	s.mu.Unlock()
	<-done
}

func shutdownError() *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeAdminShutdown, contract.ReasonShutdown,
		"rdsproxy: terminating connection because the server is shutting down").
		WithHint("Reconnect: another rdsproxy server takes the session, or this one once it is back.")
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

// promote moves a connection from startup to the relaying set, with what
// admitted it. It fails when the server is already draining.
func (s *Server) promote(c net.Conn, r *relay.Session, a *admission) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	delete(s.conns, c)
	s.relays[r] = a
	return true
}

func (s *Server) retire(r *relay.Session) {
	s.mu.Lock()
	delete(s.relays, r)
	s.mu.Unlock()
}
