package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
)

const maxHTTPRequest = 8 << 10

// TargetList is the JSON body of GET /v1/targets (see contract).
type TargetList = contract.TargetList

// serveHTTP answers one HTTP/1.x request on the PostgreSQL port. Only
// GET /v1/targets exists; the connection closes after the response. It
// returns errHandled.
func (s *Server) serveHTTP(ctx context.Context, conn net.Conn, ph *phase, hdr [4]byte) error {
	r := io.MultiReader(strings.NewReader(string(hdr[:])), io.LimitReader(conn, maxHTTPRequest))
	// The rest of the request is the client's to send: a request that
	// stalls is evicted as a stalled startup is.
	req, err := awaitClient(ph.pc, func() (*http.Request, error) { return http.ReadRequest(bufio.NewReader(r)) })
	switch {
	case ph.pc.evicted.Load():
		s.cfg.Metrics.startupFailed(contract.ReasonEvicted)
		writeHTTP(conn, http.StatusServiceUnavailable, "text/plain", []byte(evictedMessage+"\n"))
		return errHandled
	case err != nil:
		writeHTTP(conn, http.StatusBadRequest, "text/plain", []byte("bad request\n"))
		return errHandled
	}
	_, isTLS := conn.(*tls.Conn)
	switch {
	case s.cfg.RequireTLS && !isTLS:
		writeHTTP(conn, http.StatusForbidden, "text/plain",
			[]byte("this server accepts only TLS: send an SSLRequest first, as `rdsproxy connect --server-ca` does\n"))
	case req.URL.Path != contract.TargetsPath:
		writeHTTP(conn, http.StatusNotFound, "text/plain", []byte("not found; try GET /v1/targets\n"))
	case req.Method != http.MethodGet:
		writeHTTP(conn, http.StatusMethodNotAllowed, "text/plain", []byte("only GET\n"))
	default:
		s.serveTargets(ctx, conn, req)
	}
	return errHandled
}

// httpWriteTime bounds the write of an answer, which may come after a
// slow STS call has used up the request's deadline.
const httpWriteTime = 5 * time.Second

func writeHTTP(conn net.Conn, status int, contentType string, body []byte) {
	conn.SetWriteDeadline(time.Now().Add(httpWriteTime))
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {contentType}, "Connection": {"close"}},
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(strings.NewReader(string(body))),
		Close:         true,
	}
	resp.Write(conn)
}
