package ssmendpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Handshake payloads (§8), as the agent writes and reads them.
type (
	handshakeRequest struct {
		AgentVersion           string            `json:"AgentVersion"`
		RequestedClientActions []requestedAction `json:"RequestedClientActions"`
	}
	requestedAction struct {
		ActionType       string `json:"ActionType"`
		ActionParameters any    `json:"ActionParameters"`
	}
	sessionTypeParams struct {
		SessionType string            `json:"SessionType"`
		Properties  map[string]string `json:"Properties"`
	}
	handshakeResponse struct {
		ClientVersion          string            `json:"ClientVersion"`
		ProcessedClientActions []processedAction `json:"ProcessedClientActions"`
		Errors                 []string          `json:"Errors"`
	}
	processedAction struct {
		ActionType   string          `json:"ActionType"`
		ActionStatus int             `json:"ActionStatus"`
		ActionResult json.RawMessage `json:"ActionResult"`
		Error        string          `json:"Error"`
	}
	handshakeComplete struct {
		HandshakeTimeToComplete time.Duration `json:"HandshakeTimeToComplete"`
		CustomerMessage         string        `json:"CustomerMessage"`
	}
)

// handshake sends the HandshakeRequest (seq 0, SYN) with the document's
// properties, checks the response and sends HandshakeComplete (§8).
func (a *agent) handshake() error {
	start := time.Now()
	req := handshakeRequest{AgentVersion: a.e.cfg.AgentVersion, RequestedClientActions: []requestedAction{{
		ActionType: "SessionType", ActionParameters: sessionTypeParams{SessionType: "Port", Properties: a.rec.properties}}}}
	if a.e.cfg.RequestKMS {
		req.RequestedClientActions = append(req.RequestedClientActions, requestedAction{ActionType: "KMSEncryption",
			ActionParameters: map[string]string{"KMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/sandbox"}})
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := a.st.send(ptHandshakeRequest, payload); err != nil {
		return fmt.Errorf("send HandshakeRequest: %w", err)
	}
	timer := time.NewTimer(a.e.cfg.HandshakeTimeout)
	defer timer.Stop()
	var f *frame
	select {
	case f = <-a.hs:
	case <-timer.C:
		return errors.New("Handshake timed out. Please ensure that you have the latest version of the session manager plugin.")
	case <-a.ctx.Done():
		return a.ctx.Err()
	}
	if err := a.checkResponse(f, len(req.RequestedClientActions)); err != nil {
		return err
	}
	// The response's ack leaves before HandshakeComplete. The agent races the
	// two (its reader acks after handing the response over; its handshake
	// goroutine then sends HandshakeComplete), and the ack nearly always wins.
	// The plugin must see it that way: any message that reaches it between
	// HandshakeComplete and its mux set-up hits a nil mux client, and the
	// panic, recovered, ends its websocket listener for good (the session
	// stays open and deaf; in 7 of 12 runs with the ack 0-3 ms late).
	a.st.settle()
	// Ready before HandshakeComplete leaves: the client may answer at once.
	a.readyAt.Store(time.Now().Add(a.e.cfg.NotReady).UnixNano())
	a.handshakeDone.Store(true)
	complete, _ := json.Marshal(handshakeComplete{HandshakeTimeToComplete: time.Since(start)})
	if err := a.st.send(ptHandshakeComplete, complete); err != nil {
		return fmt.Errorf("send HandshakeComplete: %w", err)
	}
	return nil
}

// checkResponse fails the session on any ActionStatus ≠ 1, like the agent.
func (a *agent) checkResponse(f *frame, actions int) error {
	var resp handshakeResponse
	if err := json.Unmarshal(f.payload, &resp); err != nil {
		a.violation("HandshakeResponse: %v", err)
		return fmt.Errorf("invalid HandshakeResponse: %w", err)
	}
	if len(resp.ProcessedClientActions) != actions {
		a.violation("HandshakeResponse answers %d actions, %d requested", len(resp.ProcessedClientActions), actions)
	}
	for _, pa := range resp.ProcessedClientActions {
		if pa.ActionStatus != 1 {
			return fmt.Errorf("%s failed on the client: %s", pa.ActionType, pa.Error)
		}
	}
	if a.openVersion != "" && a.openVersion != resp.ClientVersion {
		a.violation("ClientVersion %q in the HandshakeResponse differs from %q in OpenDataChannel", resp.ClientVersion, a.openVersion)
	}
	a.mode = modeFor(a.e.cfg.AgentVersion, resp.ClientVersion)
	a.e.mu.Lock()
	a.e.versions = append(a.e.versions, "handshake:"+resp.ClientVersion)
	a.e.mu.Unlock()
	return nil
}
