package ssmendpoint

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

const (
	docPort       = "AWS-StartPortForwardingSession"
	docRemoteHost = "AWS-StartPortForwardingSessionToRemoteHost"
)

type startSessionRequest struct {
	Target       string              `json:"Target"`
	DocumentName string              `json:"DocumentName"`
	Parameters   map[string][]string `json:"Parameters"`
	Reason       string              `json:"Reason"`
}

type sessionIDRequest struct {
	SessionID string `json:"SessionId"`
}

type sessionResponse struct {
	SessionID  string `json:"SessionId"`
	StreamURL  string `json:"StreamUrl,omitempty"`
	TokenValue string `json:"TokenValue,omitempty"`
}

// apiError is an AWS JSON 1.1 error.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

// serveAPI is the SSM JSON 1.1 API: X-Amz-Target picks the operation.
// Every request must carry a valid SigV4 signature by known credentials.
func (e *Endpoint) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		writeAPIError(w, &apiError{http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeAPIError(w, &apiError{http.StatusBadRequest, "SerializationException", err.Error()})
		return
	}
	if aerr := verifySigV4(r, body, e.cfg.Credentials, time.Now()); aerr != nil {
		e.stats.badSignatures.Add(1)
		writeAPIError(w, aerr)
		return
	}
	var resp any
	switch target := r.Header.Get("X-Amz-Target"); target {
	case "AmazonSSM.StartSession":
		resp, err = e.startSession(r.Host, body)
	case "AmazonSSM.TerminateSession":
		resp, err = e.terminateSession(body)
	case "AmazonSSM.ResumeSession":
		resp, err = e.resumeSession(r.Host, body)
	case "AmazonSSM.DescribeInstanceInformation":
		resp, err = e.describeInstanceInformation(body)
	default:
		err = &apiError{http.StatusBadRequest, "UnknownOperationException", "unknown operation " + target}
	}
	if err != nil {
		writeAPIError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(resp)
}

func writeAPIError(w http.ResponseWriter, err error) {
	ae, ok := err.(*apiError)
	if !ok {
		ae = &apiError{http.StatusInternalServerError, "InternalServerError", err.Error()}
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", ae.code)
	w.WriteHeader(ae.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": ae.code, "message": ae.msg})
}

func (e *Endpoint) startSession(host string, body []byte) (any, error) {
	var req startSessionRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	rec, err := e.checkStart(&req)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.sessions[rec.id] = rec
	e.documents = append(e.documents, req.DocumentName)
	e.mu.Unlock()
	e.stats.started.Add(1)
	return e.sessionResponse(host, rec), nil
}

func (e *Endpoint) checkStart(req *startSessionRequest) (*sessionRecord, error) {
	if slices.Contains(e.cfg.DeniedTargets, req.Target) {
		return nil, &apiError{http.StatusBadRequest, "AccessDeniedException", fmt.Sprintf(
			"User: arn:aws:iam::123456789012:user/sandbox is not authorized to perform: ssm:StartSession on resource: arn:aws:ec2:us-east-1:123456789012:instance/%s because no identity-based policy allows the ssm:StartSession action", req.Target)}
	}
	if !e.TargetConnected(req.Target) {
		return nil, &apiError{http.StatusBadRequest, "TargetNotConnected", req.Target + " is not connected."}
	}
	if req.Reason != "" && len(req.Reason) > 256 {
		return nil, &apiError{http.StatusBadRequest, "ValidationException", "1 validation error detected: Value at 'reason' failed to satisfy constraint: Member must have length less than or equal to 256"}
	}
	doc, ok := documents[req.DocumentName]
	if port, pinned := e.cfg.PinnedDocuments[req.DocumentName]; pinned {
		doc, ok = pinnedDocument(port), true
	}
	if !ok {
		return nil, &apiError{http.StatusBadRequest, "InvalidDocument", fmt.Sprintf("Document %s is not supported by this endpoint", req.DocumentName)}
	}
	props, err := doc.resolve(req.Parameters)
	if err != nil {
		return nil, err
	}
	if e.cfg.NoPortPlugin {
		return nil, &apiError{http.StatusBadRequest, "InvalidDocument", fmt.Sprintf(
			"document %s requires a newer SSM Agent on target %s (agent version %s)", req.DocumentName, req.Target, e.cfg.AgentVersion)}
	}
	return &sessionRecord{id: "sandbox-" + randomHex(9), token: randomHex(32), target: req.Target, document: req.DocumentName,
		host: props["host"], port: props["portNumber"], properties: props}, nil
}

func (e *Endpoint) sessionResponse(host string, rec *sessionRecord) sessionResponse {
	return sessionResponse{SessionID: rec.id, TokenValue: rec.token,
		StreamURL: "ws://" + host + "/v1/data-channel/" + rec.id + "?role=publish_subscribe&stream=input"}
}

func (e *Endpoint) terminateSession(body []byte) (any, error) {
	var req sessionIDRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	e.stats.terminateCalls.Add(1)
	e.mu.Lock()
	rec := e.sessions[req.SessionID]
	var a *agent
	first := rec != nil && !rec.terminated
	if first {
		rec.terminated = true
		a = rec.agent
	}
	e.mu.Unlock()
	if first {
		e.stats.byAPI.Add(1)
		if a != nil {
			a.end(endReason{output: "Session terminated by TerminateSession."})
		}
	}
	return sessionResponse{SessionID: req.SessionID}, nil
}

// resumeSession hands out a fresh token for a live session.
func (e *Endpoint) resumeSession(host string, body []byte) (any, error) {
	var req sessionIDRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	e.stats.resume.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.sessions[req.SessionID]
	if rec == nil || rec.terminated || e.cfg.ResumeGrace <= 0 {
		// No token: the session is over (without ResumeGrace a session
		// does not survive the loss of its websocket).
		return sessionResponse{SessionID: req.SessionID}, nil
	}
	rec.token = randomHex(32)
	return e.sessionResponse(host, rec), nil
}
