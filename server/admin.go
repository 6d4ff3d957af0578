package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminConfig configures the admin listener: /healthz, /readyz and
// /metrics. The listener is meant for a kubelet or load balancer probe and
// a Prometheus scraper, so its limits are small: a few connections, short
// timeouts, small headers. Whoever reaches it can hold at most MaxConns
// connections, each for at most IdleTimeout between requests, and never a
// file descriptor or a goroutine more.
type AdminConfig struct {
	// Ready reports readiness for /readyz (required).
	Ready func() bool
	// Metrics is served on /metrics (required).
	Metrics prometheus.Gatherer
	// Logger receives the HTTP server's own errors (discarded if nil).
	Logger *slog.Logger

	// MaxConns caps open connections (default 64). Further connections
	// wait in the kernel's listen backlog until one closes.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's headers (default 5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request (default 10s).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response (default 30s).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next
	// request (default 30s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers (default 8 KiB; Go's server
	// allows a further 4 KiB of slack).
	MaxHeaderBytes int
	// ShutdownTimeout bounds the wait for requests in flight once the
	// context ends (default 5s).
	ShutdownTimeout time.Duration
}

// Admin listener defaults.
const (
	DefaultAdminMaxConns          = 64
	DefaultAdminReadHeaderTimeout = 5 * time.Second
	DefaultAdminReadTimeout       = 10 * time.Second
	DefaultAdminWriteTimeout      = 30 * time.Second
	DefaultAdminIdleTimeout       = 30 * time.Second
	DefaultAdminMaxHeaderBytes    = 8 << 10
	DefaultAdminShutdownTimeout   = 5 * time.Second

	// maxMetricsInFlight bounds concurrent /metrics gathers; more get 503.
	maxMetricsInFlight = 4
)

// Validate reports the first field the admin listener cannot use, as a
// *ConfigError; zero limits mean their defaults. It changes nothing.
func (c AdminConfig) Validate() error {
	switch {
	case c.Ready == nil:
		return &ConfigError{"Admin.Ready", "a readiness function is required"}
	case c.Metrics == nil:
		return &ConfigError{"Admin.Metrics", "a metrics gatherer is required"}
	case c.MaxConns < 0:
		return &ConfigError{"Admin.MaxConns", fmt.Sprintf("max connections %d is negative", c.MaxConns)}
	case c.MaxHeaderBytes < 0:
		return &ConfigError{"Admin.MaxHeaderBytes", fmt.Sprintf("max header bytes %d is negative", c.MaxHeaderBytes)}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"ReadHeaderTimeout", c.ReadHeaderTimeout}, {"ReadTimeout", c.ReadTimeout}, {"WriteTimeout", c.WriteTimeout},
		{"IdleTimeout", c.IdleTimeout}, {"ShutdownTimeout", c.ShutdownTimeout}} {
		if f.d < 0 {
			return &ConfigError{"Admin." + f.name, fmt.Sprintf("timeout %s is negative", f.d)}
		}
	}
	return nil
}

func (c AdminConfig) withDefaults() AdminConfig {
	setDefault(&c.MaxConns, DefaultAdminMaxConns)
	setDefault(&c.ReadHeaderTimeout, DefaultAdminReadHeaderTimeout)
	setDefault(&c.ReadTimeout, DefaultAdminReadTimeout)
	setDefault(&c.WriteTimeout, DefaultAdminWriteTimeout)
	setDefault(&c.IdleTimeout, DefaultAdminIdleTimeout)
	setDefault(&c.MaxHeaderBytes, DefaultAdminMaxHeaderBytes)
	setDefault(&c.ShutdownTimeout, DefaultAdminShutdownTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ServeAdmin serves the admin endpoints on ln until ctx ends, then shuts
// down gracefully within ShutdownTimeout. It closes ln.
func ServeAdmin(ctx context.Context, ln net.Listener, cfg AdminConfig) error {
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return err
	}
	cfg = cfg.withDefaults()
	hs := &http.Server{
		Handler:           adminMux(cfg),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.With("listener", "admin").Handler(), slog.LevelWarn),
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close() // requests still in flight: cut them
		}
	})
	defer stop()
	if err := hs.Serve(limitListener(ln, cfg.MaxConns)); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

func adminMux(cfg AdminConfig) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !cfg.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(cfg.Logger.With("listener", "admin").Handler(), slog.LevelWarn),
		MaxRequestsInFlight: maxMetricsInFlight,
	}))
	return mux
}

// limitListener accepts a connection only while fewer than n accepted
// ones are open; the others wait, unaccepted, in the kernel's backlog and
// cost this process nothing.
func limitListener(ln net.Listener, n int) net.Listener {
	return &capListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type capListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *capListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *capListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// slotConn gives its listener slot back on its first Close.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
