package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// serveTargets answers GET /v1/targets. With identity on, the list says
// how to sign one; a request carrying X-Rdsproxy-Identity gets only the
// targets its caller may reach, and learns who the server thinks it is.
// Without the header it gets every target, unless identity is required:
// then 401 with a sentence (and the signing details, so a client can
// retry with identity).
func (s *Server) serveTargets(ctx context.Context, conn net.Conn, req *http.Request) {
	snap := s.cfg.Targets.Current()
	if snap == nil {
		writeHTTP(conn, http.StatusServiceUnavailable, "text/plain", []byte("target list not loaded yet\n"))
		return
	}
	list := TargetList{Targets: snap.Targets()}
	if s.identity != nil {
		list.Identity = s.cfg.Identity.Info()
		encoded := req.Header.Get(callerid.HTTPHeader)
		switch {
		case encoded != "":
			p, err := s.verifyHTTPCaller(ctx, conn, encoded)
			if err != nil {
				writeIdentityError(conn, err, list.Identity)
				return
			}
			list.Caller = p
			list.Targets = reachable(list.Targets, p)
		case !s.cfg.Identity.Optional:
			// Every client's first request: it asks without an identity to
			// learn the server's, which it then signs for (an old client
			// that never does is counted at its connections).
			s.cfg.Metrics.identity("identity-challenge")
			writeIdentityError(conn, identityMissing(), list.Identity)
			return
		}
	}
	body, err := json.Marshal(list)
	if err != nil {
		writeHTTP(conn, http.StatusInternalServerError, "text/plain", []byte("encode targets\n"))
		return
	}
	writeHTTP(conn, http.StatusOK, "application/json", append(body, '\n'))
}

// verifyHTTPCaller verifies an identity header within the source's
// failure budget, charging STS refusals to it.
func (s *Server) verifyHTTPCaller(ctx context.Context, conn net.Conn, encoded string) (*discovery.Principal, error) {
	src := sourceIP(conn)
	if budget, _ := s.failures.check("", src, time.Now()); budget != "" {
		return nil, pgwire.Errorf(pgwire.CodeInvalidPassword, "auth-throttled",
			"rdsproxy: too many failed identity checks from this %s; try again later", budget)
	}
	p, _, err := s.identity.verify(ctx, encoded, "")
	if reasonOf(err) == "identity-refused" {
		s.failures.fail("", src, time.Now()) // the budget checked above
	}
	return p, err
}

// reachable keeps the targets p may reach.
func reachable(all []discovery.Target, p *discovery.Principal) []discovery.Target {
	out := make([]discovery.Target, 0, len(all))
	for i := range all {
		if discovery.AllowsPrincipal(&all[i], p) {
			out = append(out, all[i])
		}
	}
	return out
}

// identityError is the JSON body of a refused GET /v1/targets.
type identityError struct {
	Error    string               `json:"error"`
	Reason   string               `json:"reason"`
	Identity *callerid.ServerInfo `json:"identity,omitempty"`
}

func writeIdentityError(conn net.Conn, err error, info *callerid.ServerInfo) {
	var pe *pgwire.Error
	if !errors.As(err, &pe) {
		pe = stsUnreachable(err)
	}
	status := http.StatusForbidden
	switch pe.Reason {
	case "identity-missing":
		status = http.StatusUnauthorized
	case "identity-malformed":
		status = http.StatusBadRequest
	case "identity-sts-unreachable":
		status = http.StatusServiceUnavailable
	case "auth-throttled":
		status = http.StatusTooManyRequests
	}
	msg := pe.Message
	if pe.Hint != "" { // the message has no full stop of its own, as PostgreSQL's do not
		msg = strings.TrimSuffix(msg, ".") + ". " + pe.Hint
	}
	body, _ := json.Marshal(identityError{Error: msg, Reason: pe.Reason, Identity: info})
	writeHTTP(conn, status, "application/json", append(body, '\n'))
}
