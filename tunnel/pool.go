package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// ErrReplicaGone is wrapped by a per-replica tunnel's Dial error when the
// replica will not serve again under that tunnel (the instance was
// terminated, the pod deleted). The pool then closes that tunnel once its
// last stream ends, and opens a fresh one if the replica is listed healthy
// again. Any other Dial error only leaves the replica out until the next
// resolve lists it.
var ErrReplicaGone = errors.New("server replica gone")

// ErrPoolClosed is returned by Dial and DialEach after Close.
var ErrPoolClosed = errors.New("tunnel pool closed")

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Resolve lists the ids of the server's healthy replicas (instance
	// ids, pod names). It is called at start, after failures and every
	// Interval; ctx bounds one call.
	Resolve func(ctx context.Context) ([]string, error)
	// Open opens a tunnel to one replica; ctx bounds the opening only.
	Open func(ctx context.Context, id string) (Tunnel, error)
	// Key is the log attribute that names a replica: "instance" or "pod".
	// Default "replica".
	Key string
	// Interval between periodic resolves. Default 30 s.
	Interval time.Duration
	// Backoff is the least time between resolves asked for by failures;
	// it doubles while failures go on, up to Interval. Default 1 s.
	Backoff time.Duration
	Logger  *slog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *PoolConfig) Validate() error {
	var errs []error
	if c.Resolve == nil {
		errs = append(errs, errors.New("tunnel pool: Resolve is required"))
	}
	if c.Open == nil {
		errs = append(errs, errors.New("tunnel pool: Open is required"))
	}
	if c.Key == "" {
		c.Key = "replica"
	}
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	if c.Backoff <= 0 {
		c.Backoff = time.Second
	}
	c.Backoff = min(c.Backoff, c.Interval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// callTimeout bounds one Resolve or Open run by the pool's own loop.
const callTimeout = time.Minute

// Pool is a Tunnel that spreads streams over several server replicas, one
// per-replica Tunnel each. A new stream goes to the replica with the fewest
// live streams (ties: the least recently used). A replica whose Dial fails
// is left out until a resolve lists it again; one that is no longer listed
// takes no new streams and its tunnel is closed when its last stream ends
// (a draining server ends them with 57P01). One goroutine resolves: at
// start, every Interval, and after failures with backoff.
type Pool struct {
	cfg  PoolConfig
	log  *slog.Logger
	life context.Context
	stop context.CancelFunc
	kick chan struct{} // a failure asks for a resolve
	wg   sync.WaitGroup
	// listed is the latest resolve's list, sorted; only the resolving
	// goroutine touches it.
	listed []string

	mu       sync.Mutex
	replicas map[string]*replica
	picks    uint64
	resolved chan struct{} // closed after each resolve, then replaced
	lastErr  error         // the latest failure, for "no healthy replica"
	closed   bool
}

var (
	_ Tunnel     = (*Pool)(nil)
	_ Fanout     = (*Pool)(nil)
	_ LaneDialer = (*Pool)(nil)
)

// replica is one server replica and its tunnel.
type replica struct {
	id     string
	tun    Tunnel
	live   int    // streams open through tun
	used   uint64 // the pick that last chose it
	out    error  // non-nil: left out after this Dial failure
	listed bool   // the latest resolve listed it
	gone   bool   // its tunnel said ErrReplicaGone
}

func (r *replica) usable() bool { return r.listed && !r.gone && r.out == nil }

// NewPool resolves the replicas and opens a tunnel to each, so that
// configuration and permission problems surface at once: it fails when no
// replica could be opened. Tunnels outlive ctx; Close ends them.
func NewPool(ctx context.Context, cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1),
		replicas: make(map[string]*replica), resolved: make(chan struct{})}
	p.life, p.stop = context.WithCancel(context.WithoutCancel(ctx))
	if _, err := p.resolve(ctx); err != nil {
		p.Close()
		return nil, err
	}
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

// loop resolves every Interval, and after a failure's kick once the
// backoff since the previous resolve has passed. After a kick or a change
// in the list it settles: it looks again after the backoff, doubling,
// until a resolve finds nothing new (a replaced replica's successor often
// appears soon after it went).
func (p *Pool) loop() {
	defer p.wg.Done()
	gap := p.cfg.Backoff
	last := time.Now()
	timer := time.NewTimer(p.cfg.Interval)
	defer timer.Stop()
	for {
		kicked := false
		select {
		case <-p.life.Done():
			return
		case <-timer.C:
		case <-p.kick:
			if !sleep(p.life, time.Until(last.Add(gap))) {
				return
			}
			kicked = true
		}
		ctx, cancel := context.WithTimeout(p.life, callTimeout)
		changed, err := p.resolve(ctx)
		if err != nil && p.life.Err() == nil { // nothing is usable (not: the pool is closing); Dial reports it too
			p.log.Warn("no "+p.cfg.Key+" of the server is usable", "err", err)
		}
		cancel()
		last = time.Now()
		if kicked || changed {
			timer.Reset(gap)
			gap = min(2*gap, p.cfg.Interval)
		} else {
			timer.Reset(p.cfg.Interval)
			gap = p.cfg.Backoff // a quiet resolve ends the streak
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// resolve lists the replicas, takes back those listed again, retires those
// no longer listed and opens tunnels to new ones. It reports whether the
// list changed since the previous resolve, and returns an error when no
// replica is usable afterwards.
func (p *Pool) resolve(ctx context.Context) (changed bool, _ error) {
	ids, err := p.cfg.Resolve(ctx)
	if err != nil {
		err = fmt.Errorf("list the server's %ss: %w", p.cfg.Key, err)
		if p.inUse() { // else the error is all there is to say, and the caller says it
			p.log.Warn("cannot list the server's "+p.cfg.Key+"s; keeping the ones in use", "err", err)
		}
		return false, p.resolvedWith(err)
	}
	sorted := slices.Sorted(slices.Values(ids))
	changed = !slices.Equal(sorted, p.listed)
	p.listed = sorted // only the loop (and NewPool before it) resolves
	opened := p.open(ctx, p.update(ids))
	p.mu.Lock()
	for _, o := range opened {
		switch {
		case p.closed:
			p.closeLater(o.tun)
		case o.err != nil:
			p.log.Warn("cannot open a tunnel to this "+p.cfg.Key+" of the server; leaving it out", p.cfg.Key, o.id, "err", o.err)
			p.lastErr = o.err
		default:
			p.replicas[o.id] = &replica{id: o.id, tun: o.tun, listed: true}
			p.log.Info("using this "+p.cfg.Key+" of the server", p.cfg.Key, o.id, "reason", "listed healthy")
		}
	}
	p.mu.Unlock()
	if len(ids) == 0 {
		err = fmt.Errorf("no %s of the server is listed healthy", p.cfg.Key)
	}
	return changed, p.resolvedWith(err)
}

// update applies a resolve's list to the known replicas and returns the
// ids that need a tunnel.
func (p *Pool) update(ids []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, r := range p.replicas {
		was := r.listed
		r.listed = slices.Contains(ids, id)
		switch {
		case r.listed && r.out != nil && !r.gone:
			p.log.Info("using this "+p.cfg.Key+" of the server again", p.cfg.Key, id, "reason", "listed healthy again")
			r.out = nil
		case !r.listed && was && !r.gone:
			p.log.Info("this "+p.cfg.Key+" of the server is no longer listed healthy; new connections go elsewhere, open ones end with its drain",
				p.cfg.Key, id, "streams", r.live)
			p.retire(r)
		}
	}
	var need []string
	for _, id := range ids {
		if _, ok := p.replicas[id]; !ok && !slices.Contains(need, id) {
			need = append(need, id)
		}
	}
	return need
}

type opened struct {
	id  string
	tun Tunnel
	err error
}

// open opens tunnels to ids concurrently.
func (p *Pool) open(ctx context.Context, ids []string) []opened {
	out := make([]opened, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			tun, err := p.cfg.Open(ctx, id)
			if err != nil {
				err = fmt.Errorf("open tunnel to %s %s: %w", p.cfg.Key, id, err)
			}
			out[i] = opened{id: id, tun: tun, err: err}
		})
	}
	wg.Wait()
	return out
}

// inUse reports whether any replica is usable.
func (p *Pool) inUse() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.anyUsable()
}

// anyUsable reports whether any replica is usable. Called with mu held.
func (p *Pool) anyUsable() bool {
	for _, r := range p.replicas {
		if r.usable() {
			return true
		}
	}
	return false
}

// resolvedWith ends a resolve: waiters wake up. The error stands when no
// replica is usable.
func (p *Pool) resolvedWith(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.resolved)
	p.resolved = make(chan struct{})
	if p.anyUsable() {
		return nil
	}
	if err == nil {
		err = p.lastErr
	}
	if err == nil {
		err = fmt.Errorf("no %s of the server could be opened", p.cfg.Key)
	}
	p.lastErr = err
	return err
}

// retire closes r's tunnel once no stream uses it. Called with mu held.
func (p *Pool) retire(r *replica) {
	if r.live > 0 || p.replicas[r.id] != r {
		return
	}
	delete(p.replicas, r.id)
	if !p.closed {
		p.log.Info("closed the tunnel to this "+p.cfg.Key+" of the server", p.cfg.Key, r.id, "reason", "its last stream ended")
		p.closeLater(r.tun)
	}
}

// closeLater closes tun in a goroutine Close waits for. Called with mu
// held (Close sets closed under it before waiting).
func (p *Pool) closeLater(tun Tunnel) {
	if tun == nil {
		return
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); _ = tun.Close() }()
}

// Refresh asks for a resolve soon (after the failure backoff): for
// per-replica tunnels that learn on their own that a replica may be gone.
func (p *Pool) Refresh() { p.askResolve() }

func (p *Pool) askResolve() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close ends the resolve loop and every replica's tunnel with its streams.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for id, r := range p.replicas {
		p.closeLater(r.tun)
		delete(p.replicas, id)
	}
	p.mu.Unlock()
	p.stop()
	p.wg.Wait()
	return nil
}
