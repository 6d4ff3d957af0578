package server

import (
	"context"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/discovery"
)

// Instance is one server process: the Server on its listener, the
// discovery Watcher that feeds it, and the admin listener that reports on
// both. Run starts and ends them together.
type Instance struct {
	Server  *Server
	Watcher *discovery.Watcher
	// Listener is for clients (PostgreSQL and GET /v1/targets); Admin for
	// /healthz, /readyz and /metrics. Run closes both.
	Listener, Admin net.Listener
	// Metrics is served on /metrics (see NewRegistry).
	Metrics prometheus.Gatherer
	// Logger receives the "ready" and "stopped" lines (discarded if nil).
	Logger *slog.Logger
}

// Run loads a first snapshot, logs one "ready" line with the listen
// addresses, then serves until ctx ends. A failed first refresh is not
// fatal: the watcher keeps retrying, and /readyz answers 503 until a
// snapshot is loaded. When ctx ends, the admin listener and the watcher
// outlive the Server's drain: /readyz answers 503 while sessions finish,
// and with RevokeSessions a refresh during the drain still ends the
// sessions it no longer admits.
func (in Instance) Run(ctx context.Context) error {
	log := in.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in.Watcher.Refresh(ctx) // a failure is the watcher's to log and retry
	switch snap := in.Watcher.Current(); {
	case snap != nil:
		log.Info("ready", "listen", in.Listener.Addr().String(), "admin", in.Admin.Addr().String(), "targets", snap.Len())
	case ctx.Err() != nil: // stopped during the first refresh: nothing failed
	default:
		log.Warn("serving, but not ready: discovery has no target list yet (see the refresh error); /readyz answers 503 and connections are refused until a refresh succeeds",
			"listen", in.Listener.Addr().String(), "admin", in.Admin.Addr().String())
	}
	drained, endDrained := context.WithCancel(context.WithoutCancel(ctx)) // ends when Serve returns
	ready := func() bool { return in.Watcher.Ready() && !in.Server.Draining() }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { defer endDrained(); return in.Server.Serve(gctx, in.Listener) })
	g.Go(func() error { return in.Watcher.Run(drained) })
	g.Go(func() error {
		return ServeAdmin(drained, in.Admin, AdminConfig{Ready: ready, Metrics: in.Metrics, Logger: log})
	})
	err := g.Wait()
	log.Info("stopped")
	return err
}
