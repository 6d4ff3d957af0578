package ssm

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func vectorByName(t *testing.T, name string) (wire []byte, m *Message) {
	t.Helper()
	for _, v := range loadVectors(t).Vectors {
		if v.Name == name {
			wire = mustHex(t, v.SerializedHex)
			m, err := Decode(wire)
			if err != nil {
				t.Fatal(err)
			}
			return wire, m
		}
	}
	t.Fatalf("no vector %s", name)
	return nil, nil
}

// TestHandshakeResponseVectors answers the captured HandshakeRequest and
// compares the full encoded response with the plugin's, for the source-tree
// ClientVersion and the release one.
func TestHandshakeResponseVectors(t *testing.T) {
	_, reqMsg := vectorByName(t, "handshake_request_from_agent")
	var req HandshakeRequest
	if err := json.Unmarshal(reqMsg.Payload, &req); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ vector, version string }{
		{"handshake_response_session_type_port", "1.2.0.0"},
		{"handshake_response_with_release_version", DefaultClientVersion},
	} {
		t.Run(tt.vector, func(t *testing.T) {
			wire, want := vectorByName(t, tt.vector)
			resp, res, err := answerHandshake(&req, tt.version)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := json.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			m := &Message{MessageType: TypeInputStreamData, CreatedDate: want.CreatedDate,
				MessageID: want.MessageID, PayloadType: PayloadHandshakeResponse, Payload: payload}
			got, err := m.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wire) {
				t.Errorf("response payload\n%s\nwant\n%s", payload, want.Payload)
			}
			if !res.mode.mux || !res.mode.keepAliveDisabled {
				t.Errorf("agent %s: mode %+v, want mux with keep-alive off", res.agentVersion, res.mode)
			}
		})
	}
}

func TestHandshakeRefusals(t *testing.T) {
	port := `{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"5432","type":"LocalPortForwarding"}}}`
	tests := []struct {
		name     string
		actions  string
		statuses []int
		errText  string
	}{
		{"kms", port + `,{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k"}}`, []int{1, 2}, "KMS encryption"},
		{"unknown", port + `,{"ActionType":"SomeFutureAction","ActionParameters":{}}`, []int{1, 3}, "unsupported action SomeFutureAction"},
		{"shell", `{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":{}}}`, []int{2}, "not a port-forwarding session"},
		{"ssh document", `{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}}`, []int{2}, "not LocalPortForwarding"},
		{"no session type", ``, []int{}, "did not say which session type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req HandshakeRequest
			raw := `{"AgentVersion":"3.3.987.0","RequestedClientActions":[` + tt.actions + `]}`
			if err := json.Unmarshal([]byte(raw), &req); err != nil {
				t.Fatal(err)
			}
			resp, _, err := answerHandshake(&req, DefaultClientVersion)
			if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want ErrHandshake mentioning %q", err, tt.errText)
			}
			if len(resp.ProcessedClientActions) != len(tt.statuses) {
				t.Fatalf("answered %d actions, want %d", len(resp.ProcessedClientActions), len(tt.statuses))
			}
			for i, st := range tt.statuses {
				pa := resp.ProcessedClientActions[i]
				if pa.ActionStatus != st || (st != ActionSuccess) != (pa.Error != "") {
					t.Errorf("action %d: %+v, want status %d", i, pa, st)
				}
			}
		})
	}
}

// TestHandshakeFailedShapeMatchesPlugin pins the JSON shape of a response
// with a failed action against the plugin's capture (entries 0 and 1).
func TestHandshakeFailedShapeMatchesPlugin(t *testing.T) {
	_, m := vectorByName(t, "handshake_response_with_failed_and_unknown_actions")
	var plugin HandshakeResponse
	if err := json.Unmarshal(m.Payload, &plugin); err != nil {
		t.Fatal(err)
	}
	req := HandshakeRequest{AgentVersion: "3.3.987.0", RequestedClientActions: []RequestedAction{
		{ActionType: ActionSessionType, ActionParameters: json.RawMessage(`{"SessionType":"Port","Properties":{"type":"LocalPortForwarding"}}`)},
		{ActionType: ActionKMSEncryption, ActionParameters: json.RawMessage(`{"KMSKeyId":"k"}`)},
		{ActionType: "SomeFutureAction", ActionParameters: json.RawMessage(`{}`)},
	}}
	ours, _, _ := answerHandshake(&req, "1.2.0.0")
	for i := range 2 {
		p, o := plugin.ProcessedClientActions[i], ours.ProcessedClientActions[i]
		if p.ActionType != o.ActionType || p.ActionStatus != o.ActionStatus || (p.Error == "") != (o.Error == "") {
			t.Errorf("action %d: ours %+v, plugin %+v", i, o, p)
		}
	}
	// The plugin's bug: status 0 with ActionResult 3. We send status 3.
	if u := ours.ProcessedClientActions[2]; u.ActionStatus != ActionUnsupported || u.ActionResult != nil {
		t.Errorf("unknown action answered %+v", u)
	}
	if len(ours.Errors) != len(plugin.Errors) {
		t.Errorf("Errors %q, plugin %q", ours.Errors, plugin.Errors)
	}
}

func TestVersionDecisions(t *testing.T) {
	for _, d := range loadVectors(t).VersionDecisions.PluginSide {
		m := modeForAgent(d.AgentVersion, true)
		if m.mux != d.Mux || m.keepAliveDisabled != d.DisableKeepAlive || m.terminateFlag != d.TerminateFlag {
			t.Errorf("agent %q: %+v, plugin decided mux=%v keepAliveOff=%v terminateFlag=%v",
				d.AgentVersion, m, d.Mux, d.DisableKeepAlive, d.TerminateFlag)
		}
	}
	if !versionGreater(DefaultClientVersion, minClientVersion) {
		t.Fatal("DefaultClientVersion must be > 1.2.331.0")
	}
}
