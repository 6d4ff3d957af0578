package client

import (
	"context"
	"net"
	"sync"

	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// forwardCancel relays a local CancelRequest to the server and waits, up
// to the startup timeout, until the server has handled it. Through a
// tunnel that spreads over server replicas (tunnel.Fanout) the cancel
// goes to every replica at once: only the one whose session holds the
// key acts on it, the others drop it as PostgreSQL drops unknown keys.
func (p *Proxy) forwardCancel(ctx context.Context, key pgwire.CancelKey) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StartupTimeout)
	defer cancel()
	streams, err := p.cancelStreams(ctx)
	if err != nil {
		p.log.Warn("cancel request not forwarded", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() {
			if err := p.cancelOn(ctx, s, key); err != nil {
				p.log.Warn("cancel request not forwarded", "err", err)
			}
		})
	}
	wg.Wait()
}

// cancelOn sends the CancelRequest on one stream (in TLS when the server
// is reached over TLS), waits for the server to close it, and closes it.
func (p *Proxy) cancelOn(ctx context.Context, s net.Conn, key pgwire.CancelKey) error {
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if p.cfg.ServerTLS != nil {
		var err error
		if s, err = upgradeServer(ctx, s, p.cfg.ServerTLS); err != nil {
			return err
		}
	}
	deadline, _ := ctx.Deadline()
	return pgwire.SendCancel(s, key, deadline)
}

// cancelStreams opens the streams a cancel goes out on: one to each
// replica through a Fanout tunnel, else one.
func (p *Proxy) cancelStreams(ctx context.Context) ([]net.Conn, error) {
	if f, ok := p.cfg.Tunnel.(tunnel.Fanout); ok {
		return f.DialEach(ctx)
	}
	s, err := p.cfg.Tunnel.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return []net.Conn{s}, nil
}
