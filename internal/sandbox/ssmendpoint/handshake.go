package ssmendpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// handshake sends the HandshakeRequest (seq 0, SYN), checks the response and
// sends HandshakeComplete (§8).
func (a *agent) handshake() error {
	start := time.Now()
	props := map[string]string{"localPortNumber": "0", "portNumber": a.rec.port, "type": "LocalPortForwarding"}
	if a.rec.host != "" {
		props["host"] = a.rec.host
	}
	params, err := json.Marshal(ssm.SessionTypeParameters{SessionType: "Port", Properties: toAny(props)})
	if err != nil {
		return err
	}
	req := ssm.HandshakeRequest{AgentVersion: a.e.cfg.AgentVersion,
		RequestedClientActions: []ssm.RequestedAction{{ActionType: ssm.ActionSessionType, ActionParameters: params}}}
	if a.e.cfg.RequestKMS {
		req.RequestedClientActions = append(req.RequestedClientActions, ssm.RequestedAction{
			ActionType:       ssm.ActionKMSEncryption,
			ActionParameters: json.RawMessage(`{"KMSKeyId":"arn:aws:kms:us-east-1:123456789012:key/sandbox"}`)})
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := a.ch.Send(a.ctx, ssm.PayloadHandshakeRequest, payload); err != nil {
		return fmt.Errorf("send HandshakeRequest: %w", err)
	}
	timer := time.NewTimer(a.e.cfg.HandshakeTimeout)
	defer timer.Stop()
	var m *ssm.Message
	select {
	case m = <-a.hs:
	case <-timer.C:
		return errors.New("Handshake timed out. Please ensure that you have the latest version of the session manager plugin.")
	case <-a.ctx.Done():
		return a.ctx.Err()
	}
	if err := a.checkResponse(m, len(req.RequestedClientActions)); err != nil {
		return err
	}
	// Ready before HandshakeComplete leaves: the client may answer at once.
	a.readyAt.Store(time.Now().Add(a.e.cfg.NotReady).UnixNano())
	a.handshakeDone.Store(true)
	complete, _ := json.Marshal(ssm.HandshakeComplete{HandshakeTimeToComplete: time.Since(start)})
	if err := a.ch.Send(a.ctx, ssm.PayloadHandshakeComplete, complete); err != nil {
		return fmt.Errorf("send HandshakeComplete: %w", err)
	}
	return nil
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkResponse fails the session on any ActionStatus ≠ 1, like the agent.
func (a *agent) checkResponse(m *ssm.Message, actions int) error {
	var resp ssm.HandshakeResponse
	if err := json.Unmarshal(m.Payload, &resp); err != nil {
		a.e.violation(a.rec.id, "HandshakeResponse: %v", err)
		return fmt.Errorf("invalid HandshakeResponse: %w", err)
	}
	if len(resp.ProcessedClientActions) != actions {
		a.e.violation(a.rec.id, "HandshakeResponse answers %d actions, %d requested", len(resp.ProcessedClientActions), actions)
	}
	for _, pa := range resp.ProcessedClientActions {
		if pa.ActionStatus != ssm.ActionSuccess {
			return fmt.Errorf("%s failed on the client: %s", pa.ActionType, pa.Error)
		}
	}
	if a.openVersion != "" && a.openVersion != resp.ClientVersion {
		a.e.violation(a.rec.id, "ClientVersion %q in the HandshakeResponse differs from %q in OpenDataChannel", resp.ClientVersion, a.openVersion)
	}
	a.mode = modeFor(a.e.cfg.AgentVersion, resp.ClientVersion)
	a.e.mu.Lock()
	a.e.versions = append(a.e.versions, "handshake:"+resp.ClientVersion)
	a.e.mu.Unlock()
	return nil
}
