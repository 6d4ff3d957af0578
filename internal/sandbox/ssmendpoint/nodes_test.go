package ssmendpoint

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// TestNodesComeAndGo: a node added while the endpoint runs is Online and
// takes sessions; disconnected, its live session's websocket drops without
// channel_closed, ResumeSession gives no token, StartSession fails with
// TargetNotConnected and it is listed ConnectionLost; the other node is
// untouched.
func TestNodesComeAndGo(t *testing.T) {
	const added = "i-0bbbbbbbbbbbbbbbb"
	e := startTestEndpoint(t, Config{AgentVersion: CurrentAgentVersion})
	api := sdk(e, DefaultAccessKeyID, DefaultSecretAccessKey)
	start := func(target string) (*awsssm.StartSessionOutput, error) {
		return api.StartSession(t.Context(), &awsssm.StartSessionInput{Target: aws.String(target),
			DocumentName: aws.String(docPort), Parameters: map[string][]string{"portNumber": {"5432"}}})
	}
	status := func() map[string]ssmtypes.PingStatus {
		out, err := api.DescribeInstanceInformation(t.Context(), &awsssm.DescribeInstanceInformationInput{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]ssmtypes.PingStatus{}
		for _, i := range out.InstanceInformationList {
			got[aws.ToString(i.InstanceId)] = i.PingStatus
		}
		return got
	}
	if _, err := start(added); err == nil || !strings.Contains(err.Error(), "TargetNotConnected") {
		t.Fatalf("StartSession on an unknown node: %v", err)
	}
	e.AddTarget(added, "127.0.0.1:1")
	if got := status(); got[added] != ssmtypes.PingStatusOnline || got[testTarget] != ssmtypes.PingStatusOnline {
		t.Fatalf("after AddTarget: %v", got)
	}
	if e.nodeDest(added) != "127.0.0.1:1" || e.nodeDest(testTarget) != "" {
		t.Fatalf("destinations %q %q", e.nodeDest(added), e.nodeDest(testTarget))
	}
	out, err := start(added)
	if err != nil {
		t.Fatal(err)
	}
	other, err := start(testTarget)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), aws.ToString(out.StreamUrl), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	b, _ := json.Marshal(openDataChannel{MessageSchemaVersion: "1.0", RequestID: uuid.NewString(),
		TokenValue: aws.ToString(out.TokenValue), ClientID: uuid.NewString(), ClientVersion: testClientVersion})
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.ReadMessage(); err != nil { // the HandshakeRequest
		t.Fatal(err)
	}
	if n := e.DisconnectTarget(added); n != 1 {
		t.Fatalf("DisconnectTarget ended %d sessions, want 1", n)
	}
	for {
		kind, m, err := ws.ReadMessage()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("websocket closed normally, want an abrupt drop: %v", err)
			}
			break
		}
		if f, derr := decodeFrame(m); kind == websocket.BinaryMessage && derr == nil && f.typ == typeClosed {
			t.Fatal("channel_closed sent for a node that went away")
		}
	}
	res, err := api.ResumeSession(t.Context(), &awsssm.ResumeSessionInput{SessionId: out.SessionId})
	if err != nil || aws.ToString(res.TokenValue) != "" {
		t.Fatalf("ResumeSession after the node went away: token %q, %v", aws.ToString(res.TokenValue), err)
	}
	if _, err := start(added); err == nil || !strings.Contains(err.Error(), "TargetNotConnected") {
		t.Fatalf("StartSession on a disconnected node: %v", err)
	}
	if got := status(); got[added] != ssmtypes.PingStatusConnectionLost || got[testTarget] != ssmtypes.PingStatusOnline {
		t.Fatalf("after DisconnectTarget: %v", got)
	}
	if live := e.LiveSessions(); len(live) != 1 || live[0] != aws.ToString(other.SessionId) {
		t.Fatalf("live sessions %v, want only the other node's", live)
	}
}
