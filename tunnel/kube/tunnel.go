// Package kube reaches the rdsproxy server through the Kubernetes API
// server's pods/portforward subresource, the way `kubectl port-forward
// deploy/NAME` does, without kubectl and with more resilience, spread over
// every ready pod of the Deployment.
//
// Data flow: New loads the kubeconfig (or takes a rest.Config). The first
// Dial lists the ready pods (Deployment selector or label selector,
// kubectl's ordering) and builds a tunnel.Pool with one tunnel per pod
// (replicas.go); the pool lists them again every ResolveInterval, after
// failures and on every change a watch on the pods reports (watch.go),
// sends each new stream to the pod with the fewest, leaves out a pod that
// fails and retires one that is no longer ready. Until the server's first
// byte, a stream that a draining pod's port refused is opened again on
// another pod (replay.go). A pod's tunnel
// opens one multiplexed port-forward connection to it (SPDY tunnelled in a
// websocket; plain SPDY if the websocket upgrade is refused) and creates a
// stream pair on it per Dial: an error stream and a data stream that share
// a fresh requestID. The data stream is returned as a net.Conn; the error
// stream is read in the background and turns into that conn's read error
// if the kubelet reports one. When the server ends the data stream the conn
// resets it at once, as client-go does, so that the kubelet stops
// forwarding and closes the error stream without waiting for our side (a
// CancelRequest's sender waits for exactly that end). A failing stream ends
// only itself. When the connection drops, or a stream error makes the pod
// suspect, the pod's next Dial checks the pod: deleted or terminating, it
// fails with tunnel.ErrReplicaGone and the pool moves on; streams still
// open on an old connection keep it until they end. The transport knows
// nothing about PostgreSQL.
//
// docs/architecture.md §4 shows where a tunnel sits in a connection's path.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

var _ tunnel.Tunnel = (*podTunnel)(nil)

const (
	// closeWait bounds how long a closing SPDY connection waits for its
	// streams before the network connection is closed under them.
	closeWait = 5 * time.Second
	// pingTimeout closes a connection whose peer stopped answering pings.
	pingTimeout = 30 * time.Second
)

// podTunnel opens streams to the server's port in one pod (pin), or, with
// no pin, in the best ready pod of the Deployment, re-resolved after a drop.
// It is safe for concurrent use.
type podTunnel struct {
	cfg       Config
	log       *slog.Logger
	rest      *rest.Config
	http      *http.Client // API requests (not port-forward)
	namespace string
	core      corev1client.CoreV1Interface
	apps      appsv1client.AppsV1Interface
	// pin is the one pod a replica's tunnel forwards to; when it is
	// deleted or terminating, Dial fails with tunnel.ErrReplicaGone.
	pin string

	connecting chan struct{} // one slot: one Dial (re)connects at a time

	mu       sync.Mutex
	closed   bool
	cur      *session                 // where new streams go; nil: none yet
	sessions map[*session]struct{}    // every open connection
	conns    map[*streamConn]struct{} // every open stream
	wg       sync.WaitGroup           // stream goroutines
}

// newPodTunnel validates cfg and loads the API server settings. It does
// not contact the API server: the first Dial does.
func newPodTunnel(ctx context.Context, cfg Config) (*podTunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rc, ns, err := cfg.restConfig()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "rdsproxy"
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kube: http client: %w", err)
	}
	core, err := corev1client.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("kube: core client: %w", err)
	}
	apps, err := appsv1client.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("kube: apps client: %w", err)
	}
	return &podTunnel{
		cfg:        cfg,
		log:        cfg.Logger,
		rest:       rc,
		http:       hc,
		namespace:  ns,
		core:       core,
		apps:       apps,
		connecting: make(chan struct{}, 1),
		sessions:   make(map[*session]struct{}),
		conns:      make(map[*streamConn]struct{}),
	}, nil
}

// pinned returns a tunnel to pod alone that shares t's API settings and
// clients. It does not contact the API server.
func (t *podTunnel) pinned(pod string) *podTunnel {
	return &podTunnel{
		cfg:        t.cfg,
		log:        t.log,
		rest:       t.rest,
		http:       t.http,
		namespace:  t.namespace,
		core:       t.core,
		apps:       t.apps,
		pin:        pod,
		connecting: make(chan struct{}, 1),
		sessions:   make(map[*session]struct{}),
		conns:      make(map[*streamConn]struct{}),
	}
}

// Dial opens a stream to the server port in a ready pod. It is bounded by
// ctx and by Config.DialTimeout. A connection-level failure while opening
// the stream pair is retried once on a fresh connection to a ready pod.
func (t *podTunnel) Dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		s, err := t.session(ctx)
		if err != nil {
			return nil, err
		}
		c, err := t.openStream(ctx, s)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if ctx.Err() != nil { // the connection may be fine: keep it
			return nil, &kubeError{kind: ErrUnreachable, cause: err, msg: fmt.Sprintf(
				"kube: pod %s did not accept a port-forward stream within %s (API server %s)",
				s.pod, t.cfg.DialTimeout, t.rest.Host)}
		}
		t.retire(s, err)
		if attempt == 2 {
			return nil, t.explain(err, access{verb: "create", resource: "pods/portforward", name: s.pod})
		}
	}
}

// Close ends every stream and connection and waits for their goroutines.
func (t *podTunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := make([]*streamConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	t.mu.Lock()
	sessions := make([]*session, 0, len(t.sessions))
	for s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.sessions = map[*session]struct{}{}
	t.cur = nil
	t.mu.Unlock()
	for _, s := range sessions {
		s.shutdown()
	}
	t.wg.Wait()
	if t.pin == "" { // a pinned tunnel shares the HTTP client
		utilnet.CloseIdleConnectionsFor(t.http.Transport)
	}
	return nil
}

// session returns the connection for a new stream, with a reference taken.
func (t *podTunnel) session(ctx context.Context) (*session, error) {
	if s, err := t.current(); s != nil || err != nil {
		return s, err
	}
	select {
	case t.connecting <- struct{}{}:
		defer func() { <-t.connecting }()
	case <-ctx.Done():
		return nil, t.explain(context.Cause(ctx), access{verb: "get/create", resource: "pods/portforward"})
	}
	if s, err := t.current(); s != nil || err != nil {
		return s, err // another Dial reconnected meanwhile
	}
	if s := t.suspectSession(); s != nil {
		ok, err := t.podUsable(ctx, s.pod)
		if ok {
			s.suspect.Store(false)
			return t.current()
		}
		if err == nil {
			err = fmt.Errorf("pod %s is no longer ready", s.pod)
		}
		t.retire(s, err) // gone, or cannot tell: pick a ready pod afresh
	}
	return t.reconnect(ctx)
}

// current returns the live current session with a reference, or nil.
func (t *podTunnel) current() (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	s := t.cur
	if s == nil || s.dead() || s.suspect.Load() {
		return nil, nil
	}
	s.refs++
	return s, nil
}

func (t *podTunnel) suspectSession() *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != nil && !t.cur.dead() && t.cur.suspect.Load() {
		return t.cur
	}
	return nil
}

// reconnect resolves a ready pod and opens a new connection to it.
func (t *podTunnel) reconnect(ctx context.Context) (*session, error) {
	start := time.Now()
	pod, err := t.resolvePod(ctx)
	if err != nil {
		return nil, err
	}
	raw, transport, err := t.connect(ctx, pod)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		raw.Close()
		return nil, ErrClosed
	}
	s, err := t.newSessionLocked(pod, transport, raw)
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	if old := t.cur; old != nil {
		t.retireLocked(old)
	}
	t.cur = s
	t.sessions[s] = struct{}{}
	s.refs++
	t.mu.Unlock()
	t.log.Info("kube port-forward connected", "pod", pod, "namespace", t.namespace,
		"transport", transport, "duration_ms", time.Since(start).Milliseconds())
	return s, nil
}

// retire stops new streams from using s; it is closed once its last
// stream ends (at once if it has none).
func (t *podTunnel) retire(s *session, why error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !s.retired {
		t.log.Info("kube port-forward connection retired", "pod", s.pod, "err", why)
	}
	t.retireLocked(s)
}

func (t *podTunnel) retireLocked(s *session) {
	s.retired = true
	if t.cur == s {
		t.cur = nil
	}
	t.maybeShutdownLocked(s)
}

// spawn runs f on a goroutine Close waits for, unless the tunnel is
// closed. Adding to the WaitGroup under mu keeps every Add before Wait.
func (t *podTunnel) spawn(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Go(f)
	return true
}

// release drops a stream's reference to s.
func (t *podTunnel) release(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.refs--
	t.maybeShutdownLocked(s)
}

func (t *podTunnel) maybeShutdownLocked(s *session) {
	if _, open := t.sessions[s]; !open || s.refs > 0 || !(s.retired || s.dead()) {
		return
	}
	delete(t.sessions, s)
	t.wg.Go(s.shutdown)
}

// session is one port-forward connection to one pod: a SPDY connection
// (moby/spdystream, the library under client-go's port-forward) on the
// upgraded byte stream.
type session struct {
	pod       string
	transport string
	raw       net.Conn
	conn      *spdystream.Connection
	served    chan struct{} // closed when the frame reader ends

	nextID  atomic.Int64 // requestID of the next stream pair
	suspect atomic.Bool  // a stream reported an error: re-check the pod

	refs    int  // guarded by Tunnel.mu
	retired bool // guarded by Tunnel.mu
}

// newSessionLocked starts the SPDY client on raw: no idle timeout (quiet
// streams live on), pings every pingPeriod, and a connection that answers
// no ping within pingTimeout is closed so the next Dial reconnects.
func (t *podTunnel) newSessionLocked(pod, transport string, raw net.Conn) (*session, error) {
	conn, err := spdystream.NewConnection(raw, false)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("kube: spdy connection to pod %s: %w", pod, err)
	}
	conn.SetIdleTimeout(0)
	conn.SetCloseTimeout(closeWait)
	s := &session{pod: pod, transport: transport, raw: raw, conn: conn, served: make(chan struct{})}
	t.wg.Go(func() {
		defer close(s.served)
		conn.Serve(refuseStream)
	})
	t.wg.Go(s.keepalive)
	return s, nil
}

// refuseStream rejects streams opened by the server side; the protocol
// has none.
func refuseStream(st *spdystream.Stream) { st.Refuse() }

func (s *session) keepalive() {
	tick := time.NewTicker(pingPeriod)
	defer tick.Stop()
	for {
		select {
		case <-s.conn.CloseChan():
			return
		case <-tick.C:
		}
		watchdog := time.AfterFunc(pingTimeout, func() { s.raw.Close() })
		s.conn.Ping() // returns on the answer or when the connection ends
		watchdog.Stop()
	}
}

func (s *session) dead() bool {
	select {
	case <-s.conn.CloseChan():
		return true
	default:
		return false
	}
}

// shutdown sends GOAWAY and waits, bounded, until spdystream has closed
// the connection and its reader has ended.
func (s *session) shutdown() {
	s.conn.Close()
	timer := time.NewTimer(closeWait + time.Second)
	defer timer.Stop()
	select {
	case <-s.served:
	case <-timer.C:
		s.raw.Close()
		<-s.served
	}
	s.conn.Wait(closeWait) // collect spdystream's shutdown result
}
