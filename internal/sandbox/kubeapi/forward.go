package kubeapi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	//lint:ignore SA1019 the API server's own port-forward handler is built on this package, as the fake API server is
	apihttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	//lint:ignore SA1019 the API server's own port-forward handler is built on this package, as the fake API server is
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/tools/portforward"
)

const (
	// targetDialTimeout bounds the dial from the "pod" to its target.
	targetDialTimeout = 5 * time.Second
	// maxPendingPairs bounds half-open pairs (one stream of two received).
	maxPendingPairs = 1024
)

// portForwardSPDY upgrades POST .../portforward to SPDY/3.1.
func (s *Server) portForwardSPDY(w http.ResponseWriter, r *http.Request) {
	p, ok := s.forwardTarget(w, r, "create")
	if !ok {
		return
	}
	if _, err := apihttpstream.Handshake(r, w, []string{pfconst.PortForwardV1Name}); err != nil {
		return // Handshake wrote the answer
	}
	raw, err := upgradeSPDY(w, r)
	if err != nil {
		return // upgradeSPDY answered the client
	}
	fc := &fwdConn{pod: p.name, raw: raw}
	h := newPairer(s, fc)
	conn, err := spdy.NewServerConnection(raw, h.newStream)
	if err != nil {
		raw.Close()
		return
	}
	fc.conn = conn
	s.serveConn(fc, "spdy")
}

// upgradeSPDY answers 101 Switching Protocols to SPDY/3.1 and hijacks the
// connection, as apimachinery's response upgrader does, but keeps the
// connection so that it can be wrapped in quietConn.
func upgradeSPDY(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") ||
		!strings.EqualFold(r.Header.Get("Upgrade"), spdy.HeaderSpdy31) {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "Upgrade request required", nil)
		return nil, errors.New("not a SPDY upgrade")
	}
	w.Header().Add("Connection", "Upgrade")
	w.Header().Add("Upgrade", spdy.HeaderSpdy31)
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	return quietConn{Conn: conn, r: rw.Reader}, nil
}

// quietConn hides the error of closing an already broken connection:
// spdystream otherwise keeps a goroutine for a second trying to report it.
// It also replays bytes the HTTP server buffered before the hijack.
type quietConn struct {
	net.Conn
	r io.Reader
}

func (c quietConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c quietConn) Close() error {
	c.Conn.Close()
	return nil
}

// portForwardWebsocket accepts a websocket with the SPDY tunnelling
// subprotocol and serves SPDY over its binary messages.
func (s *Server) portForwardWebsocket(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	refuse := s.refuseWS
	s.mu.Unlock()
	if refuse || !gwebsocket.IsWebSocketUpgrade(r) {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			"Upgrade request required", nil)
		return
	}
	p, ok := s.forwardTarget(w, r, "get")
	if !ok {
		return
	}
	up := gwebsocket.Upgrader{
		Subprotocols:    []string{pfconst.WebsocketsSPDYTunnelingPortForwardV1},
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	if ws.Subprotocol() != pfconst.WebsocketsSPDYTunnelingPortForwardV1 {
		ws.Close()
		return
	}
	tc := portforward.NewTunnelingConnection("kubeapi", ws)
	fc := &fwdConn{pod: p.name, raw: quietConn{Conn: tc, r: tc}}
	h := newPairer(s, fc)
	conn, err := spdy.NewServerConnection(fc.raw, h.newStream)
	if err != nil {
		tc.Close()
		return
	}
	fc.conn = conn
	s.serveConn(fc, "websocket")
}

// forwardTarget checks RBAC and that the pod exists and runs.
func (s *Server) forwardTarget(w http.ResponseWriter, r *http.Request, verb string) (pod, bool) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	s.mu.Lock()
	hang := s.hangPF
	s.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return pod{}, false
	}
	if !s.allowed(w, verb, "pods/portforward", "", ns, name) {
		return pod{}, false
	}
	p, ok := s.findPod(name)
	if !ok || ns != s.cfg.Namespace {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("pods %q not found", name), &metav1.StatusDetails{Name: name, Kind: "pods"})
		return pod{}, false
	}
	return p, true
}

// serveConn owns an upgraded connection until it closes.
func (s *Server) serveConn(fc *fwdConn, transport string) {
	if !s.trackConn(fc, transport) {
		fc.close()
		return
	}
	fc.conn.SetIdleTimeout(0)
	s.log.Debug("kubeapi port-forward connection", "pod", fc.pod, "transport", transport)
	<-fc.conn.CloseChan()
	s.untrackConn(fc)
}

// pairer matches the error and data streams of each requestID on one
// connection and starts forwarding when both are there.
type pairer struct {
	s  *Server
	fc *fwdConn

	mu      sync.Mutex
	pending map[string]*pair
}

func newPairer(s *Server, fc *fwdConn) *pairer {
	return &pairer{s: s, fc: fc, pending: map[string]*pair{}}
}

// pair is one forwarded connection: an error stream, a data stream, and
// the connection to the pod's target.
type pair struct {
	id        string
	port      int
	errs      apihttpstream.Stream
	data      apihttpstream.Stream
	errsReply <-chan struct{}
	dataReply <-chan struct{}

	mu       sync.Mutex
	target   net.Conn
	finished bool
}

// newStream is spdystream's callback for each stream the client creates.
// It runs on the connection's frame worker, so it only records the stream
// (or, under HoldStreams, stalls on purpose).
func (h *pairer) newStream(st apihttpstream.Stream, replySent <-chan struct{}) error {
	h.s.mu.Lock()
	hold := h.s.hold
	h.s.mu.Unlock()
	if hold != nil { // blocks this connection's frame worker: no reply
		select {
		case <-hold:
		case <-h.s.closing:
		}
	}
	hd := st.Headers()
	id := hd.Get(corev1.PortForwardRequestIDHeader)
	port, err := strconv.Atoi(hd.Get(corev1.PortHeader))
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("invalid port header %q", hd.Get(corev1.PortHeader))
	}
	if id == "" {
		return fmt.Errorf("missing %s header", corev1.PortForwardRequestIDHeader)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pending[id]
	if p == nil {
		if len(h.pending) >= maxPendingPairs {
			return fmt.Errorf("too many half-open stream pairs")
		}
		p = &pair{id: id, port: port}
		h.pending[id] = p
	}
	switch hd.Get(corev1.StreamType) {
	case corev1.StreamTypeError:
		p.errs, p.errsReply = st, replySent
	case corev1.StreamTypeData:
		p.data, p.dataReply = st, replySent
	default:
		return fmt.Errorf("invalid stream type %q", hd.Get(corev1.StreamType))
	}
	if p.errs != nil && p.data != nil {
		delete(h.pending, id)
		h.s.addActive(p, h.fc.pod)
		h.s.wg.Go(func() { h.forward(p) })
	}
	return nil
}

// forward serves one stream pair as the kubelet and its container runtime
// (containerd) do: check the port, dial it, copy both ways; once one
// direction has ended, wait for the other at most ForwardGrace, then stop
// forwarding and close the error stream. A failure goes to the error
// stream. The data stream is half-closed as soon as the pod's side ends.
func (h *pairer) forward(p *pair) {
	defer h.s.removeActive(p)
	defer h.fc.conn.RemoveStreams(p.errs, p.data)
	<-p.errsReply
	<-p.dataReply
	po, ok := h.s.findPod(h.fc.pod)
	if !ok {
		p.fail(fmt.Sprintf("pod %s not found", h.fc.pod))
		return
	}
	if p.port != h.s.cfg.Port {
		p.refuse(refusedMessage(po.name, p.port))
		h.s.wg.Go(func() { drain(p.data) })
		return
	}
	target, err := net.DialTimeout("tcp", po.target, targetDialTimeout)
	if err != nil {
		p.fail(fmt.Sprintf("error forwarding port %d to pod %s, uid : %v", p.port, po.name, err))
		return
	}
	if !p.setTarget(target) {
		target.Close()
		return
	}
	in, out := make(chan struct{}), make(chan struct{})
	h.s.wg.Go(func() { // client → pod
		defer close(in)
		io.Copy(target, p.data)
		if tc, ok := target.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		drain(p.data) // after a failed write to a closed pod side
	})
	h.s.wg.Go(func() { // pod → client
		defer close(out)
		io.Copy(p.data, target)
		p.data.Close() // FIN: the client reads EOF
	})
	select {
	case <-in:
		h.awaitSecond(out)
	case <-out:
		h.awaitSecond(in)
	case <-h.fc.conn.CloseChan(): // a dropped connection ends the pair at once
	}
	p.finish()
}

// awaitSecond waits for the second direction of a pair to end, at most
// ForwardGrace (for ever if negative), or until the connection drops.
func (h *pairer) awaitSecond(second <-chan struct{}) {
	var timeout <-chan time.Time
	if g := h.s.cfg.ForwardGrace; g > 0 {
		t := time.NewTimer(g)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-second:
	case <-timeout:
	case <-h.fc.conn.CloseChan():
	}
}

// drain reads a data stream nobody forwards any more until the client
// ends it (FIN or reset) or the connection closes: a server stream left
// unread stalls the connection's frame workers, and with them its close.
func drain(st io.Reader) { io.Copy(io.Discard, st) }

// refusedMessage is what the kubelet reports, from containerd, for a port
// nothing listens on in the pod.
func refusedMessage(pod string, port int) string {
	return fmt.Sprintf("error forwarding port %d to pod %s, uid : failed to execute portforward in network namespace %q: "+
		"failed to connect to localhost:%d inside namespace %q, IPv4: dial tcp4 127.0.0.1:%d: connect: connection refused "+
		"IPv6 dial tcp6 [::1]:%d: connect: connection refused ",
		port, pod, "/var/run/netns/cni-"+pod, port, pod, port, port)
}

func (p *pair) setTarget(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return false
	}
	p.target = c
	return true
}

// fail reports msg on the error stream and ends the pair.
func (p *pair) fail(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	p.errs.Write([]byte(msg))
	p.errs.Close()
	p.data.Reset()
	if p.target != nil {
		p.target.Close()
	}
}

// refuse reports msg and ends the pair as the kubelet ends a forward that
// failed: both streams close (FIN, no reset).
func (p *pair) refuse(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	p.errs.Write([]byte(msg))
	p.errs.Close()
	p.data.Close()
}

// finish ends a pair whose forwarding stopped: the error stream closes
// empty (FIN, no reset: the client reads a clean end) and the pod side of
// the connection closes, which ends a copy still running.
func (p *pair) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.finished {
		p.finished = true
		p.errs.Close()
	}
	p.target.Close()
}
