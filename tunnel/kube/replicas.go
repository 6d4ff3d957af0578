package kube

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// DefaultResolveInterval is how often the tunnel lists the ready pods when
// nothing fails (failures make it list sooner).
const DefaultResolveInterval = 10 * time.Second

var (
	_ tunnel.Tunnel = (*Tunnel)(nil)
	_ tunnel.Fanout = (*Tunnel)(nil)
)

// Tunnel opens streams to the server's port in the ready pods of the
// Deployment (or label selector), spread over them: a tunnel.Pool of one
// port-forward tunnel per pod, listed again every ResolveInterval, after
// failures, and on every change a pod watch reports. A new stream goes to
// the pod with the fewest open streams. A pod whose stream cannot be opened
// is left out until it is listed ready again; a pod that is deleted or
// terminating takes no new streams, and its tunnel closes once its last
// stream ends (the server's drain ends them with 57P01). DialEach opens one
// stream per pod, for cancels. It is safe for concurrent use.
type Tunnel struct {
	base *podTunnel      // API settings and clients; lists pods, never dials
	life context.Context // ends with Close: the pod watch, a stream's move
	stop context.CancelFunc
	wg   sync.WaitGroup // the pod watch

	start chan struct{} // one slot: one Dial creates the pool

	mu     sync.Mutex
	pool   *tunnel.Pool
	closed bool
}

// New validates cfg and loads the API server settings. It does not contact
// the API server: the first Dial lists the pods.
func New(ctx context.Context, cfg Config) (*Tunnel, error) {
	base, err := newPodTunnel(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{base: base, start: make(chan struct{}, 1)}
	t.life, t.stop = context.WithCancel(context.WithoutCancel(ctx))
	return t, nil
}

// Namespace is the namespace the tunnel works in (flag, kubeconfig, default).
func (t *Tunnel) Namespace() string { return t.base.namespace }

// Dial opens a stream to the server port in the least loaded ready pod,
// trying the others when it fails, and once more after listing the pods
// again when none is left. Each attempt on a pod is bounded by
// Config.DialTimeout, as is the first list; the whole by ctx. Until the
// server's first byte the stream moves to another pod if the kubelet
// reports that the pod's port refused it (see replayConn).
func (t *Tunnel) Dial(ctx context.Context) (net.Conn, error) {
	p, err := t.replicas(ctx)
	if err != nil {
		return nil, err
	}
	c, err := p.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return &replayConn{conn: c, dial: p.Dial, life: t.life, timeout: t.base.cfg.DialTimeout, onMove: t.moved}, nil
}

// moved logs a stream that moved off a pod whose server refused it.
func (t *Tunnel) moved(from, to net.Conn, why error) {
	t.base.log.Info("new connection opened again: the pod's server refused it (draining or gone)",
		"from", from.RemoteAddr().String(), "to", to.RemoteAddr().String(), "err", why)
}

// DialEach opens one stream to every ready pod (tunnel.Fanout): a
// CancelRequest goes to each, and only the pod that carries the session
// acts on it.
func (t *Tunnel) DialEach(ctx context.Context) ([]net.Conn, error) {
	p, err := t.replicas(ctx)
	if err != nil {
		return nil, err
	}
	return p.DialEach(ctx)
}

// Close ends every stream, per-pod tunnel and the pod resolver.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	t.closed = true
	p := t.pool
	t.mu.Unlock()
	t.stop()
	t.wg.Wait()
	if p != nil {
		p.Close() // and with it every per-pod tunnel
	}
	return t.base.Close()
}

// replicas returns the pool, creating it on first use: the first list of
// ready pods happens here, so that its errors (RBAC, no ready pod, an
// unreachable API server) are the Dial's.
func (t *Tunnel) replicas(ctx context.Context) (*tunnel.Pool, error) {
	if p, err := t.current(); p != nil || err != nil {
		return p, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.base.cfg.DialTimeout)
	defer cancel()
	select {
	case t.start <- struct{}{}:
		defer func() { <-t.start }()
	case <-ctx.Done():
		return nil, t.base.explain(context.Cause(ctx), access{verb: "list", resource: "pods"})
	}
	if p, err := t.current(); p != nil || err != nil {
		return p, err
	}
	p, err := tunnel.NewPool(ctx, tunnel.PoolConfig{
		Resolve:  t.base.servingPods,
		Open:     t.openPod,
		Key:      "pod",
		Interval: t.base.cfg.ResolveInterval,
		Logger:   t.base.log,
	})
	if err != nil {
		return nil, unwrapPool(err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		p.Close()
		return nil, ErrClosed
	}
	t.pool = p
	t.wg.Go(func() { t.watchPods(p.Refresh) })
	return p, nil
}

func (t *Tunnel) current() (*tunnel.Pool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	return t.pool, nil
}

// openPod is the pool's Open: a tunnel pinned to pod. It does not contact
// the API server; the pod's first Dial does.
func (t *Tunnel) openPod(_ context.Context, pod string) (tunnel.Tunnel, error) {
	return t.base.pinned(pod), nil
}

// unwrapPool returns the kube error under the pool's first resolve failure
// when there is one, so that the user reads its sentence alone.
func unwrapPool(err error) error {
	var ke *kubeError
	if errors.As(err, &ke) {
		return ke
	}
	return err
}
