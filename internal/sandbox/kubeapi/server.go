// Package kubeapi is a fake Kubernetes API server for tests of the kube
// tunnel and of kubectl against the same scenarios. It listens on
// 127.0.0.1 with TLS and serves what `kubectl port-forward deploy/NAME`
// and tunnel/kube need: discovery, GET deployment, LIST and WATCH pods by
// label selector, GET pod, and pods/{name}/portforward.
//
// Data flow of a port-forward: the client upgrades POST .../portforward to
// SPDY/3.1 (apimachinery's SPDY response upgrader), or GET to a websocket
// carrying SPDY in binary messages ("SPDY/3.1+portforward.k8s.io", served
// with gorilla and client-go's TunnelingConnection, then the same SPDY
// server code). The client opens an error stream and a data stream per
// forwarded connection, tied by the requestID header; once both are there
// the "pod" checks the requested port (Config.Port is the one it serves),
// dials its target address (an rdsproxy server, or an echo server in tests)
// and copies bytes both ways, half-closes included. A failure, such as a
// port nothing listens on, is written to the pair's error stream, as the
// kubelet does. Like containerd under the kubelet, the pod side stops
// forwarding once both directions have ended, or Config.ForwardGrace after
// the first did: only then is the error stream closed.
//
// Switches for tests: refuse websocket (forces the SPDY fallback), fail
// the latest stream, forbid a verb on a resource (403 with a Status body),
// roll the Deployment to a new pod that forwards elsewhere, mark pods not
// ready, drop every port-forward connection. For several replicas and a
// rollout one pod at a time, as the Deployment controller and the kubelet
// do it: AddPod (a new ready pod, its own target), Terminate (the pod is
// marked for deletion: deletionTimestamp and grace period set, Ready false,
// still listed, and port-forwarding to it still works while its container
// runs, so a server that stopped listening refuses on the error stream),
// Remove (the container exited: the pod leaves the list, gets 404, and the
// kubelet's port-forward connections to it end).
//
// docs/architecture.md §7 describes the sandbox it belongs to.
package kubeapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"slices"
	"sync"
	"time"

	//lint:ignore SA1019 the API server's own port-forward handler is built on this package, as the fake API server is
	apihttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Defaults for Config.
const (
	DefaultPort         = 5480
	DefaultForwardGrace = time.Second
)

// Config describes the single Deployment the fake cluster runs.
type Config struct {
	// Token is the bearer token clients must send; random if empty.
	Token string
	// Namespace of the Deployment ("default" if empty).
	Namespace string
	// Deployment name ("rdsproxy" if empty).
	Deployment string
	// Labels are the Deployment's selector and its pods' labels
	// ({"app": Deployment} if empty).
	Labels map[string]string
	// Target is the address the first pod forwards its port to.
	Target string
	// Port is the container port the pods serve (DefaultPort, the rdsproxy
	// server's default, if zero). A stream for another port fails as the
	// kubelet fails it: connection refused, on the error stream.
	Port int
	// ForwardGrace is how long a forwarded connection waits for its second
	// direction to end once the first has, before the pod side stops
	// forwarding and closes the error stream: containerd waits 1 s (the
	// default), CRI-O 0.5 s, after socat. Negative waits for both
	// directions however long, the strictest server a client may meet:
	// kubectl still ends a connection at once there, as it resets the data
	// stream when the pod's side ends.
	ForwardGrace time.Duration
	// Logger receives request and stream records (discarded if nil).
	Logger *slog.Logger
}

// Server is a running fake API server. Its switches are safe for
// concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	srv  *httptest.Server
	ca   []byte
	user string

	mu        sync.Mutex
	pods      []*pod
	podSeq    int
	refuseWS  bool
	forbidden map[string]bool // "verb resource"
	upgrades  map[string]int  // transport → count
	conns     map[*fwdConn]struct{}
	active    []*pair        // open pairs, oldest first
	streams   map[string]int // pod → stream pairs forwarded
	watchers  map[chan podEvent]struct{}
	version   int        // resourceVersion: bumped on every pod change
	history   []podEvent // the latest changes, for watches from a version
	closed    bool
	hangPF    bool          // port-forward upgrades never answer
	hold      chan struct{} // non-nil: new streams get no reply until closed
	closing   chan struct{} // closed by Close: releases every hang

	wg sync.WaitGroup // forwarding goroutines
}

type pod struct {
	name    string
	target  string
	ready   bool
	created time.Time
	readyAt time.Time // last Ready transition
	deleted time.Time // non-zero: terminating (deletionTimestamp)
	version int       // resourceVersion of its latest change
}

// terminationGrace is the deletionGracePeriodSeconds a terminating pod
// shows (the pod spec's default).
const terminationGrace = 30

// Start runs a fake API server on 127.0.0.1 with one ready pod.
func Start(cfg Config) (*Server, error) {
	if cfg.Target == "" {
		return nil, errors.New("kubeapi: a target address for the pod is required")
	}
	if cfg.Token == "" {
		b := make([]byte, 16)
		rand.Read(b)
		cfg.Token = hex.EncodeToString(b)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("kubeapi: port %d is out of range 1-65535", cfg.Port)
	}
	if cfg.ForwardGrace == 0 {
		cfg.ForwardGrace = DefaultForwardGrace
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Deployment == "" {
		cfg.Deployment = "rdsproxy"
	}
	if len(cfg.Labels) == 0 {
		cfg.Labels = map[string]string{"app": cfg.Deployment}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		user:      "rdsproxy-developer",
		forbidden: map[string]bool{},
		upgrades:  map[string]int{},
		conns:     map[*fwdConn]struct{}{},
		streams:   map[string]int{},
		watchers:  map[chan podEvent]struct{}{},
		closing:   make(chan struct{}),
	}
	s.addPodLocked(cfg.Target)
	s.srv = httptest.NewUnstartedServer(s.routes())
	s.srv.StartTLS()
	s.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	return s, nil
}

// URL is the API server address (https://127.0.0.1:PORT).
func (s *Server) URL() string { return s.srv.URL }

// Token is the bearer token the server accepts.
func (s *Server) Token() string { return s.cfg.Token }

// Namespace is the Deployment's namespace.
func (s *Server) Namespace() string { return s.cfg.Namespace }

// Deployment is the Deployment's name.
func (s *Server) Deployment() string { return s.cfg.Deployment }

// RESTConfig returns client settings for the server with the given bearer
// token (use Token() for the valid one).
func (s *Server) RESTConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            s.srv.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.ca},
		Timeout:         30 * time.Second,
	}
}

// WriteKubeconfig writes a kubeconfig with one context, "fake", that
// points at the server with the valid token and the Deployment's namespace.
func (s *Server) WriteKubeconfig(path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["fake"] = &clientcmdapi.Cluster{Server: s.srv.URL, CertificateAuthorityData: s.ca}
	kc.AuthInfos["fake"] = &clientcmdapi.AuthInfo{Token: s.cfg.Token}
	kc.Contexts["fake"] = &clientcmdapi.Context{Cluster: "fake", AuthInfo: "fake", Namespace: s.cfg.Namespace}
	kc.CurrentContext = "fake"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("kubeapi: write kubeconfig %s: %w", path, err)
	}
	return nil
}

// Close drops every port-forward connection and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.DropConnections()
	s.srv.Close()
	s.wg.Wait()
}

// RefuseWebsocket makes websocket port-forward upgrades fail with 400, as
// an API server without websocket port-forwarding does.
func (s *Server) RefuseWebsocket(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseWS = refuse
}

// HangPortForward makes port-forward requests (both transports) get no
// answer until the client gives up, like an API server that hangs.
func (s *Server) HangPortForward(hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangPF = hang
}

// HoldStreams makes the server leave new streams unanswered (no SYN_REPLY)
// until ReleaseStreams, as a stuck kubelet would.
func (s *Server) HoldStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// ReleaseStreams answers the held streams and stops holding new ones.
func (s *Server) ReleaseStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Forbid makes requests for verb on resource ("get" "deployments", "list"
// "pods", "get" "pods", "get"/"create" "pods/portforward") answer 403.
func (s *Server) Forbid(verb, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbidden[verb+" "+resource] = true
}

// Allow undoes Forbid.
func (s *Server) Allow(verb, resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.forbidden, verb+" "+resource)
}

// Upgrades counts successful port-forward upgrades by transport
// ("websocket", "spdy").
func (s *Server) Upgrades() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.upgrades))
	for k, v := range s.upgrades {
		out[k] = v
	}
	return out
}

// Pods lists the current pod names, oldest first.
func (s *Server) Pods() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.pods))
	for _, p := range s.pods {
		names = append(names, p.name)
	}
	return names
}

// SetReady marks every pod ready or not ready.
func (s *Server) SetReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		p.setReady(ready)
		s.notifyLocked(watchModified, p)
	}
}

func (p *pod) setReady(ready bool) {
	if p.ready != ready {
		p.ready, p.readyAt = ready, time.Now()
	}
}

// AddPod adds a ready pod forwarding to target, as the Deployment
// controller does when it scales up or surges in a rollout, and returns
// its name.
func (s *Server) AddPod(target string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.addPodLocked(target)
	s.log.Info("kubeapi pod added", "pod", p.name, "target", target)
	return p.name
}

// Terminate marks a pod for deletion, as a DELETE (rollout, scale-in,
// eviction) does: deletionTimestamp and the grace period are set and the
// pod is no longer Ready, but it stays listed, and port-forwarding to it
// goes on while its container runs. The caller then stops the pod's
// server (the kubelet's SIGTERM) and calls Remove once it has exited.
func (s *Server) Terminate(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		if p.name == name {
			if p.deleted.IsZero() {
				p.deleted = time.Now()
				p.setReady(false)
				s.notifyLocked(watchModified, p)
			}
			s.log.Info("kubeapi pod terminating", "pod", name)
			return nil
		}
	}
	return fmt.Errorf("kubeapi: no pod %s", name)
}

// Remove deletes a pod for good, as the API server does once its
// containers have exited: it leaves the list, GET answers 404, and the
// kubelet's port-forward connections to it end.
func (s *Server) Remove(name string) error {
	s.mu.Lock()
	i := slices.IndexFunc(s.pods, func(p *pod) bool { return p.name == name })
	if i < 0 {
		s.mu.Unlock()
		return fmt.Errorf("kubeapi: no pod %s", name)
	}
	s.notifyLocked(watchDeleted, s.pods[i])
	s.pods = slices.Delete(s.pods, i, i+1)
	var drop []*fwdConn
	for c := range s.conns {
		if c.pod == name {
			drop = append(drop, c)
		}
	}
	s.mu.Unlock()
	for _, c := range drop {
		c.close()
	}
	s.log.Info("kubeapi pod removed", "pod", name, "connections", len(drop))
	return nil
}

// Streams counts the forwarded connections (stream pairs) opened to each
// pod so far.
func (s *Server) Streams() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.streams)
}

// Rollout replaces every pod with one new ready pod forwarding to target
// and returns its name. With dropConnections the old pods' port-forward
// connections are closed (the kubelet went away with them); without, they
// stay up and each new stream on them gets a "pod not found" error.
func (s *Server) Rollout(target string, dropConnections bool) string {
	s.mu.Lock()
	old := s.pods
	s.pods = nil
	for _, p := range old {
		s.notifyLocked(watchDeleted, p)
	}
	name := s.addPodLocked(target).name
	var drop []*fwdConn
	for c := range s.conns {
		if dropConnections && c.pod != name {
			drop = append(drop, c)
		}
	}
	s.mu.Unlock()
	for _, c := range drop {
		c.close()
	}
	s.log.Info("kubeapi rollout", "old", len(old), "new", name)
	return name
}

// DropConnections closes every port-forward connection.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]*fwdConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// FailLatestStream writes msg on the error stream of the most recently
// opened forwarded connection and resets its data stream, as the kubelet
// does when forwarding fails. The other streams are untouched.
func (s *Server) FailLatestStream(msg string) error {
	s.mu.Lock()
	var p *pair
	if n := len(s.active); n > 0 {
		p = s.active[n-1]
	}
	s.mu.Unlock()
	if p == nil {
		return errors.New("kubeapi: no open stream to fail")
	}
	p.fail(msg)
	return nil
}

func (s *Server) addPodLocked(target string) *pod {
	s.podSeq++
	now := time.Now()
	p := &pod{
		name:    fmt.Sprintf("%s-%05d", s.cfg.Deployment, s.podSeq),
		target:  target,
		ready:   true,
		created: now,
		readyAt: now,
	}
	s.pods = append(s.pods, p)
	s.notifyLocked(watchAdded, p)
	return p
}

func (s *Server) findPod(name string) (pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pods {
		if p.name == name {
			return *p, true
		}
	}
	return pod{}, false
}

// fwdConn is one upgraded port-forward connection.
type fwdConn struct {
	pod  string
	raw  net.Conn // quietConn: closing it twice is harmless
	conn apihttpstream.Connection
}

// close resets the connection's streams, sends GOAWAY and closes the
// network connection at once, as a vanishing kubelet would (spdystream
// alone waits for every stream, even one the server never answered).
func (c *fwdConn) close() {
	c.conn.Close()
	c.raw.Close()
}

func (s *Server) trackConn(c *fwdConn, transport string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.upgrades[transport]++
	return true
}

func (s *Server) untrackConn(c *fwdConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) addActive(p *pair, pod string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active = append(s.active, p)
	s.streams[pod]++
}

func (s *Server) removeActive(p *pair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.active {
		if q == p {
			s.active = append(s.active[:i], s.active[i+1:]...)
			return
		}
	}
}
