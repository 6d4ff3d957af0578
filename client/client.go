// Package client is the laptop side of rdsproxy. For each local
// connection it reads the PostgreSQL startup (declining GSS encryption,
// and SSL unless Config.LocalTLS is set), opens a stream to the server through
// the tunnel, sends the startup with rdsproxy.target, the caller identity
// (rdsproxy.identity, a signed sts:GetCallerIdentity, when the server
// checks identity) and the user's IAM token (pipelined, so authentication
// costs no extra round trip through the tunnel), swallows the server's
// password request, and relays bytes.
// CancelRequests are sent to the server over a new stream.
//
// docs/architecture.md §4 follows one connection through it.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/accept"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/stripe"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// Tokens signs (or returns a cached) RDS IAM token.
type Tokens interface {
	Get(ctx context.Context, endpoint, region, user string) (string, error)
}

// Config is one local listener's settings.
type Config struct {
	Tunnel tunnel.Tunnel
	Target contract.Target
	Tokens Tokens
	// Identities and Server, when both set, add a caller identity signed
	// for Server (as GET /v1/targets described it) to every startup, in
	// the same write, so it costs no round trip.
	Identities Identities
	Server     *callerid.ServerInfo
	// ServerTLS, when set, upgrades every stream to the server with
	// SSLRequest + TLS before anything else is sent.
	ServerTLS *tls.Config
	// LocalTLS, when set, accepts local clients' SSLRequests with this
	// server configuration; otherwise the local hop is plaintext and
	// SSLRequests are declined.
	LocalTLS *tls.Config
	// Striping offers the striped transport (internal/stripe) on every
	// connection to an IAM target: one stripe per session of the tunnel
	// (tunnel.Spreader), zstd-compressed unless NoCompression. A server
	// from before striping keeps the raw stream.
	Striping      bool
	NoCompression bool
	// StartupTimeout bounds a local client's startup and the server's
	// answer (default 30s).
	StartupTimeout time.Duration
	MaxStartupSize int
	Logger         *slog.Logger
}

// Proxy serves one target on local listeners.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	codec  *stripe.Codec                       // with Striping
	server atomic.Pointer[callerid.ServerInfo] // starts as cfg.Server; relearnServer updates it
	// laneOffUntil: until then new connections keep off the tunnel's lane
	// and spread over its other sessions, since the last server took a
	// lane offer without the lane (laneOff). One for all of a Pool's
	// replicas: during a rolling upgrade, an old one turns it off for all.
	laneOffUntil atomic.Pointer[time.Time]
}

// laneRetry is how long connections keep off the lane after a server
// took an offer without it; then the next one offers it again, so a
// server upgraded behind the tunnel gets the lane back.
const laneRetry = time.Minute

// New checks cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Tunnel == nil || cfg.Tokens == nil {
		return nil, errors.New("client: tunnel and token source are required")
	}
	if err := cfg.Target.Validate(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.StartupTimeout == 0 {
		cfg.StartupTimeout = 30 * time.Second
	}
	if cfg.MaxStartupSize == 0 {
		cfg.MaxStartupSize = pgwire.DefaultMaxStartupSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("target", cfg.Target.Name)}
	if cfg.Striping {
		var err error
		if p.codec, err = stripe.NewCodec(); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	p.server.Store(cfg.Server)
	return p, nil
}

// Serve accepts local connections on ln until ctx ends, then closes ln,
// ends every open connection and returns when all have finished. A
// connection past its startup hears why (FATAL 57P01, between two of the
// server's messages when it can), one still starting is closed. Running
// out of file descriptors pauses accepting; it does not end Serve. A stop
// that ends connections says how many (the server cancels what they were
// running).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	var ended atomic.Int64 // connections the stop ended
	err := accept.Serve(ctx, ln, p.log, func(c net.Conn) {
		wg.Go(func() {
			defer c.Close()
			if p.handle(ctx, c) {
				ended.Add(1)
			}
		})
	})
	wg.Wait()
	if n := ended.Load(); n > 0 {
		p.log.Warn("stopped: ended open connections; the server cancels the statements they were running", "connections", n)
	}
	if err != nil {
		return fmt.Errorf("local listener: %w", err)
	}
	return nil
}
