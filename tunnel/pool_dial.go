package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
)

// pick chooses the usable replica with the fewest live streams, skipping
// tried, and counts the stream that is about to open.
func (p *Pool) pick(tried []string) (*replica, <-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, ErrPoolClosed
	}
	var best *replica
	for _, r := range p.replicas {
		if !r.usable() || slices.Contains(tried, r.id) {
			continue
		}
		if best == nil || r.live < best.live || r.live == best.live && r.used < best.used {
			best = r
		}
	}
	if best == nil {
		return nil, p.resolved, nil
	}
	p.picks++
	best.used = p.picks
	best.live++
	return best, nil, nil
}

// Dial opens a stream on the least loaded usable replica. When that fails
// it tries the others; when none is usable it asks for a resolve, waits for
// it and tries once more.
func (p *Pool) Dial(ctx context.Context) (net.Conn, error) {
	return p.dial(ctx, false)
}

// DialLane dials as Dial does, over the chosen replica's lane when its
// tunnel has one (LaneDialer).
func (p *Pool) DialLane(ctx context.Context) (net.Conn, error) {
	return p.dial(ctx, true)
}

func (p *Pool) dial(ctx context.Context, lane bool) (net.Conn, error) {
	var tried []string
	waited := false
	for {
		r, resolved, err := p.pick(tried)
		if err != nil {
			return nil, err
		}
		if r == nil {
			if waited {
				return nil, p.noneUsable()
			}
			p.askResolve()
			select {
			case <-resolved:
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for a healthy %s of the server: %w", p.cfg.Key, ctx.Err())
			}
			waited, tried = true, nil
			continue
		}
		c, err := p.dialOn(ctx, r, true, lane)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		tried = append(tried, r.id)
	}
}

// DialEach opens one stream to each usable replica (tunnel.Fanout).
func (p *Pool) DialEach(ctx context.Context) ([]net.Conn, error) {
	rs, resolved, err := p.pickEach()
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		p.askResolve()
		select {
		case <-resolved:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a healthy %s of the server: %w", p.cfg.Key, ctx.Err())
		}
		if rs, _, err = p.pickEach(); err != nil {
			return nil, err
		}
	}
	conns := make([]net.Conn, len(rs))
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { conns[i], errs[i] = p.dialOn(ctx, r, false, false) })
	}
	wg.Wait()
	conns = slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil })
	if len(conns) == 0 {
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return nil, p.noneUsable()
	}
	return conns, nil
}

// pickEach counts a stream on every usable replica.
func (p *Pool) pickEach() ([]*replica, <-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, ErrPoolClosed
	}
	var rs []*replica
	for _, r := range p.replicas {
		if r.usable() {
			r.live++
			rs = append(rs, r)
		}
	}
	return rs, p.resolved, nil
}

// dialOn opens a stream on r (over its lane, if lane and it has one),
// whose live count pick already raised. On failure the count drops and r
// is left out.
func (p *Pool) dialOn(ctx context.Context, r *replica, watch, lane bool) (net.Conn, error) {
	dial := r.tun.Dial
	if ld, ok := r.tun.(LaneDialer); ok && lane {
		dial = ld.DialLane
	}
	c, err := dial(ctx)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", p.cfg.Key, r.id, err)
		p.release(r, err, ctx.Err() == nil)
		return nil, err
	}
	p.log.Debug("stream opened", p.cfg.Key, r.id)
	return p.wrap(c, r, watch), nil
}

// wrap makes c one of r's counted streams; watch: a first read that fails
// before any byte arrived leaves r out.
func (p *Pool) wrap(c net.Conn, r *replica, watch bool) net.Conn {
	pc := &poolConn{Conn: c, p: p, r: r}
	pc.answered.Store(!watch)
	if _, ok := c.(interface{ CloseWrite() error }); ok {
		return &halfCloser{pc}
	}
	return pc
}

// refused leaves r out after one of its streams ended before the server
// answered.
func (p *Pool) refused(r *replica, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !r.usable() || p.closed {
		return
	}
	r.out = fmt.Errorf("a stream ended before the server answered: %w", err)
	p.lastErr = r.out
	p.log.Warn("leaving this "+p.cfg.Key+" of the server out until it is listed healthy again", p.cfg.Key, r.id, "err", r.out)
	p.askResolve()
}

// release ends one of r's streams; failed says its Dial failed through
// the replica's fault (not the caller's context).
func (p *Pool) release(r *replica, err error, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.live--
	if failed {
		p.lastErr = err
		switch {
		case errors.Is(err, ErrReplicaGone) && !r.gone:
			r.gone = true
			p.log.Warn("this "+p.cfg.Key+" of the server is gone; leaving it out", p.cfg.Key, r.id, "err", err)
			p.askResolve()
		case !r.gone && r.out == nil:
			r.out = err
			p.log.Warn("leaving this "+p.cfg.Key+" of the server out until it is listed healthy again", p.cfg.Key, r.id, "err", err)
			p.askResolve()
		}
	}
	if r.gone || !r.listed {
		p.retire(r)
	}
}

func (p *Pool) noneUsable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr != nil {
		return fmt.Errorf("no healthy %s of the server: %w", p.cfg.Key, p.lastErr)
	}
	return fmt.Errorf("no healthy %s of the server", p.cfg.Key)
}
