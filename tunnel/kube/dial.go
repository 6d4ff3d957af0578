package kube

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/websocket"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

const (
	// pingPeriod keeps quiet connections alive through load balancers and
	// NAT; the connection itself has no idle timeout.
	pingPeriod = 10 * time.Second
	// maxStatusBody bounds the error body read from a refused upgrade.
	maxStatusBody = 64 << 10

	transportWebsocket = "websocket"
	transportSPDY      = "spdy"
)

// connect opens one port-forward connection to pod: SPDY tunnelled in a
// websocket first, plain SPDY when the websocket upgrade is refused. The
// whole attempt, upgrade response included, is bounded by ctx. It returns
// the upgraded byte stream that SPDY frames travel on.
func (t *podTunnel) connect(ctx context.Context, pod string) (net.Conn, string, error) {
	u := t.core.RESTClient().Post().Namespace(t.namespace).
		Resource("pods").Name(pod).SubResource("portforward").URL()
	conn, err := t.dialWebsocket(ctx, u)
	if err == nil {
		return conn, transportWebsocket, nil
	}
	if !shouldFallback(err) {
		return nil, "", t.explain(err, access{verb: "get", resource: "pods/portforward", name: pod})
	}
	t.log.Debug("kube websocket upgrade refused, falling back to SPDY", "pod", pod, "err", err)
	conn, spdyErr := t.dialSPDY(ctx, u)
	if spdyErr == nil {
		return conn, transportSPDY, nil
	}
	verb := "create"
	if se, ok := apiStatus(err); ok && apierrors.IsForbidden(se) {
		verb = "get/create" // RBAC refused both methods
	}
	return nil, "", t.explain(spdyErr, access{verb: verb, resource: "pods/portforward", name: pod})
}

// dialWebsocket negotiates "SPDY/3.1+portforward.k8s.io" over a websocket
// (GET, RBAC verb "get") and returns client-go's TunnelingConnection, a
// net.Conn over the websocket's binary messages. gorilla bounds the dial,
// TLS and upgrade by ctx's deadline, and honours proxy settings.
func (t *podTunnel) dialWebsocket(ctx context.Context, u *url.URL) (net.Conn, error) {
	rt, holder, err := websocket.RoundTripperFor(t.rest)
	if err != nil {
		return nil, fmt.Errorf("websocket transport: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.Negotiate(rt, holder, req, pfconst.WebsocketsSPDYTunnelingPortForwardV1)
	if err != nil {
		return nil, err
	}
	return portforward.NewTunnelingConnection("rdsproxy-kube", ws), nil
}

// dialSPDY upgrades a POST (RBAC verb "create") to SPDY/3.1 and returns
// the upgraded connection. client-go's SPDY dialer has no deadline for the
// upgrade response and hides the connection, so the upgrade is done here;
// client-go still adds the credentials (token, exec plugin, impersonation).
// It dials the API server directly: proxies are honoured on the websocket
// path only.
func (t *podTunnel) dialSPDY(ctx context.Context, u *url.URL) (net.Conn, error) {
	tlsCfg, err := rest.TLSConfigFor(t.rest)
	if err != nil {
		return nil, fmt.Errorf("spdy tls config: %w", err)
	}
	up := &spdyUpgrader{tls: tlsCfg}
	rt, err := rest.HTTPWrappersForConfig(t.rest, up)
	if err != nil {
		return nil, fmt.Errorf("spdy auth wrappers: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(streamhttp.HeaderProtocolVersion, portforward.PortForwardProtocolV1Name)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, refusal(resp)
	}
	if p := resp.Header.Get(streamhttp.HeaderProtocolVersion); p != portforward.PortForwardProtocolV1Name {
		up.conn.Close()
		return nil, fmt.Errorf("spdy upgrade: server chose protocol %q, want %q", p, portforward.PortForwardProtocolV1Name)
	}
	return up.conn, nil
}

// refusal turns a non-101 upgrade answer into an error; a Kubernetes
// Status body becomes an *apierrors.StatusError (403, 401, 404...).
func refusal(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		if st.Code == 0 {
			st.Code = int32(resp.StatusCode)
		}
		return &apierrors.StatusError{ErrStatus: st}
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = "empty response"
	}
	return fmt.Errorf("spdy upgrade refused: %s: %s", resp.Status, msg)
}

// spdyUpgrader is the innermost RoundTripper of one SPDY upgrade: it dials
// (TLS for https), writes the request with the upgrade headers, reads the
// answer, all within ctx, and keeps the connection on 101.
type spdyUpgrader struct {
	tls  *tls.Config
	conn net.Conn
}

func (u *spdyUpgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", hostPort(req.URL))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	resp, conn, err := u.exchange(ctx, raw, req)
	if !stop() {
		raw.Close()
		return nil, fmt.Errorf("spdy upgrade: %w", context.Cause(ctx))
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		raw.Close() // the body is buffered: the connection is done
		return resp, nil
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		raw.Close()
		return nil, err
	}
	u.conn = conn
	return resp, nil
}

// exchange sends the upgrade request on raw and reads the answer. On 101
// the returned conn replays bytes read past the answer.
func (u *spdyUpgrader) exchange(ctx context.Context, raw net.Conn, req *http.Request) (*http.Response, net.Conn, error) {
	conn := raw
	if req.URL.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if u.tls != nil {
			cfg = u.tls.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, err
		}
		conn = tc
	}
	req = req.Clone(ctx)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, nil, nil
	}
	return resp, &bufferedConn{Conn: conn, r: br}, nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// bufferedConn reads first what the HTTP reader buffered past the 101.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
