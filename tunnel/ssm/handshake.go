package ssm

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Handshake action statuses (§8.3).
const (
	ActionSuccess     = 1
	ActionFailed      = 2
	ActionUnsupported = 3
)

// Handshake action types.
const (
	ActionSessionType   = "SessionType"
	ActionKMSEncryption = "KMSEncryption"
)

// HandshakeRequest is the agent's PayloadType 5 message (§8.2).
type HandshakeRequest struct {
	AgentVersion           string            `json:"AgentVersion"`
	RequestedClientActions []RequestedAction `json:"RequestedClientActions"`
}

// RequestedAction is one action the agent asks the client to process.
type RequestedAction struct {
	ActionType       string          `json:"ActionType"`
	ActionParameters json.RawMessage `json:"ActionParameters"`
}

// SessionTypeParameters are the parameters of a SessionType action.
type SessionTypeParameters struct {
	SessionType string         `json:"SessionType"`
	Properties  map[string]any `json:"Properties"`
}

// HandshakeResponse is the client's PayloadType 6 message (§8.3). Field
// order is the wire order.
type HandshakeResponse struct {
	ClientVersion          string            `json:"ClientVersion"`
	ProcessedClientActions []ProcessedAction `json:"ProcessedClientActions"`
	Errors                 []string          `json:"Errors"`
}

// ProcessedAction answers one RequestedAction.
type ProcessedAction struct {
	ActionType   string          `json:"ActionType"`
	ActionStatus int             `json:"ActionStatus"`
	ActionResult json.RawMessage `json:"ActionResult"`
	Error        string          `json:"Error"`
}

// HandshakeComplete is the agent's PayloadType 7 message (§8.4).
type HandshakeComplete struct {
	HandshakeTimeToComplete time.Duration `json:"HandshakeTimeToComplete"`
	CustomerMessage         string        `json:"CustomerMessage"`
}

// ErrHandshake marks handshake failures: the agent asked for something this
// client does not do.
var ErrHandshake = errors.New("session manager handshake failed")

// errKMS is the user-facing explanation for a KMS encryption request.
const errKMS = "the agent asked for KMS encryption of the session, which rdsproxy does not support " +
	"(agents do not encrypt port-forwarding sessions; check the Session Manager preferences and the document)"

// handshakeResult is what the client learned from the HandshakeRequest.
type handshakeResult struct {
	agentVersion string
	properties   map[string]any
	mode         agentMode
}

// answerHandshake builds the response to req. It answers every action; err
// is non-nil when an action could not be satisfied (the response then tells
// the agent why, and the agent ends the session).
func answerHandshake(req *HandshakeRequest, clientVersion string) (HandshakeResponse, handshakeResult, error) {
	resp := HandshakeResponse{ClientVersion: clientVersion, ProcessedClientActions: []ProcessedAction{}}
	res := handshakeResult{agentVersion: req.AgentVersion}
	var errs []error
	sawSessionType := false
	for _, a := range req.RequestedClientActions {
		pa := ProcessedAction{ActionType: a.ActionType, ActionStatus: ActionSuccess}
		var err error
		switch a.ActionType {
		case ActionSessionType:
			sawSessionType = true
			res.properties, err = checkSessionType(a.ActionParameters)
			if err != nil {
				pa.ActionStatus = ActionFailed
			}
		case ActionKMSEncryption:
			pa.ActionStatus, err = ActionFailed, errors.New(errKMS)
		default:
			pa.ActionStatus, err = ActionUnsupported, fmt.Errorf("unsupported action %s", a.ActionType)
		}
		if err != nil {
			pa.Error = err.Error()
			resp.Errors = append(resp.Errors, err.Error())
			errs = append(errs, err)
		}
		resp.ProcessedClientActions = append(resp.ProcessedClientActions, pa)
	}
	if !sawSessionType {
		errs = append(errs, errors.New("the agent did not say which session type it runs"))
	}
	if len(errs) > 0 {
		return resp, res, fmt.Errorf("%w: %w", ErrHandshake, errors.Join(errs...))
	}
	res.mode = modeForAgent(req.AgentVersion, true)
	return resp, res, nil
}

func checkSessionType(raw json.RawMessage) (map[string]any, error) {
	var p SessionTypeParameters
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("decode SessionType parameters: %w", err)
	}
	if p.SessionType != "Port" {
		return nil, fmt.Errorf("session type is %q, not a port-forwarding session (Port)", p.SessionType)
	}
	if t, _ := p.Properties["type"].(string); t != "LocalPortForwarding" {
		return nil, fmt.Errorf("port session type is %q, not LocalPortForwarding; use AWS-StartPortForwardingSession or AWS-StartPortForwardingSessionToRemoteHost", t)
	}
	return p.Properties, nil
}
