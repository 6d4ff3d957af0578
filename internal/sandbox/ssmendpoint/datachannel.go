package ssmendpoint

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// openDataChannel is the client's first, text, frame (§4).
type openDataChannel struct {
	MessageSchemaVersion string `json:"MessageSchemaVersion"`
	RequestID            string `json:"RequestId"`
	TokenValue           string `json:"TokenValue"`
	ClientID             string `json:"ClientId"`
	ClientVersion        string `json:"ClientVersion"`
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 64 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// serveDataChannel is the websocket at a StreamUrl: it checks the
// OpenDataChannel frame and then runs the agent for the session until it
// ends.
func (e *Endpoint) serveDataChannel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e.mu.Lock()
	rec := e.sessions[id]
	switch {
	case e.closed:
		e.mu.Unlock()
		http.Error(w, "endpoint closed", http.StatusServiceUnavailable)
		return
	case rec == nil:
		e.mu.Unlock()
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	case rec.terminated:
		e.mu.Unlock()
		http.Error(w, "session terminated", http.StatusGone)
		return
	}
	e.wg.Add(1) // under mu, so Close cannot be waiting yet
	e.mu.Unlock()
	defer e.wg.Done()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	a, fresh := e.openChannel(ws, rec)
	switch {
	case a == nil:
		ws.Close()
	case fresh:
		a.run()
	} // else a resumed websocket, now served by a's read loop
}

// openChannel reads and checks the OpenDataChannel text frame (§4) and
// attaches a new agent to the session (fresh), or hands the websocket to the
// session's agent after a ResumeSession. nil: refused.
func (e *Endpoint) openChannel(ws *websocket.Conn, rec *sessionRecord) (a *agent, fresh bool) {
	fail := func(format string, args ...any) (*agent, bool) {
		e.violation(rec.id, format, args...)
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "bad OpenDataChannel"), time.Now().Add(time.Second))
		return nil, false
	}
	// lenient records a violation the service might let pass; strict mode
	// refuses the websocket for it too.
	lenient := func(format string, args ...any) bool {
		if e.cfg.Strict {
			fail(format, args...)
			return true
		}
		e.violation(rec.id, format, args...)
		return false
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, b, err := ws.ReadMessage()
	if err != nil {
		return fail("no OpenDataChannel frame: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	if kind != websocket.TextMessage {
		return fail("first frame is websocket type %d, want a text OpenDataChannel frame", kind)
	}
	var open openDataChannel
	if err := json.Unmarshal(b, &open); err != nil {
		return fail("OpenDataChannel: %v", err)
	}
	if subtle.ConstantTimeCompare([]byte(open.TokenValue), []byte(rec.token)) != 1 {
		return fail("OpenDataChannel: wrong TokenValue")
	}
	if open.MessageSchemaVersion != "1.0" {
		if lenient("OpenDataChannel: MessageSchemaVersion %q", open.MessageSchemaVersion) {
			return nil, false
		}
	}
	for name, v := range map[string]string{"RequestId": open.RequestID, "ClientId": open.ClientID} {
		if u, err := uuid.Parse(v); err != nil || u.Version() != 4 || v != u.String() {
			if lenient("OpenDataChannel: %s %q is not a lower-case v4 UUID", name, v) {
				return nil, false
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if rec.terminated || e.closed {
		return nil, false
	}
	if rec.agent != nil {
		if !rec.agent.attach(ws) {
			return nil, false // connected or ending: refuse
		}
		return rec.agent, false
	}
	a = newAgent(e, rec, ws, open.ClientVersion)
	rec.agent = a
	e.versions = append(e.versions, open.ClientVersion)
	e.stats.opened.Add(1)
	return a, true
}
