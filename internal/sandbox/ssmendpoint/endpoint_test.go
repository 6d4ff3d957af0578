package ssmendpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestAgentVersionRules checks the agent's mux/keep-alive decisions against
// the outputs of the real agent's comparison code.
func TestAgentVersionRules(t *testing.T) {
	raw, err := os.ReadFile("../../../tunnel/ssm/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		VersionDecisions struct {
			AgentSide []struct {
				ClientVersion    string `json:"client_version"`
				DisableKeepAlive bool   `json:"agent_disables_smux_keepalive"`
				Mux              bool   `json:"agent_uses_smux_mux_mode (if type=LocalPortForwarding)"`
			} `json:"agent_side_by_client_version"`
		} `json:"version_decisions"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.VersionDecisions.AgentSide) == 0 {
		t.Fatal("no agent-side vectors")
	}
	for _, d := range v.VersionDecisions.AgentSide {
		m := modeFor("3.3.987.0", d.ClientVersion)
		if m.mux != d.Mux || m.keepAliveDisabled != d.DisableKeepAlive {
			t.Errorf("client %q: mux=%v keepAliveOff=%v, agent decided %v %v", d.ClientVersion, m.mux, m.keepAliveDisabled, d.Mux, d.DisableKeepAlive)
		}
	}
	if m := modeFor("3.0.196.0", ssm.DefaultClientVersion); m.mux {
		t.Error("agent 3.0.196.0 must use basic mode")
	}
	if m := modeFor("3.1.1000.0", ssm.DefaultClientVersion); !m.mux || m.keepAliveDisabled {
		t.Errorf("agent 3.1.1000.0: %+v, want mux with keep-alive on", m)
	}
}

func clientFrame(t *testing.T, mutate func(m *ssm.Message)) []byte {
	t.Helper()
	m := &ssm.Message{MessageType: ssm.TypeInputStreamData, CreatedDate: uint64(time.Now().UnixMilli()),
		SequenceNumber: 1, MessageID: uuid.New(), PayloadType: ssm.PayloadOutput, Payload: []byte("data")}
	if mutate != nil {
		mutate(m)
	}
	f, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ackFrame(t *testing.T, seq int64, id uuid.UUID, flags uint64) []byte {
	t.Helper()
	p, _ := json.Marshal(ssm.AckContent{AcknowledgedMessageType: ssm.TypeOutputStreamData,
		AcknowledgedMessageID: id.String(), AcknowledgedMessageSequenceNumber: seq, IsSequentialMessage: true})
	return clientFrame(t, func(m *ssm.Message) {
		m.MessageType, m.SequenceNumber, m.Flags, m.PayloadType, m.Payload = ssm.TypeAcknowledge, 0, flags, 0, p
	})
}

// TestValidatorCatchesViolations: each malformed client frame is reported,
// and well-formed ones are not.
func TestValidatorCatchesViolations(t *testing.T) {
	agentID := uuid.New()
	agentFrame, _ := (&ssm.Message{MessageType: ssm.TypeOutputStreamData, CreatedDate: 1, SequenceNumber: 7,
		MessageID: agentID, PayloadType: 1, Payload: []byte("x")}).Encode(nil)
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
		want  string // "" = no violation
	}{
		{"good data", func(t *testing.T) []byte { return clientFrame(t, nil) }, ""},
		{"good ack", func(t *testing.T) []byte { return ackFrame(t, 7, agentID, 3) }, ""},
		{"short", func(t *testing.T) []byte { return make([]byte, 100) }, "shorter than the 120-byte header"},
		{"NUL padding", func(t *testing.T) []byte {
			f := clientFrame(t, nil)
			for i := typeStart + len(ssm.TypeInputStreamData); i < typeEnd; i++ {
				f[i] = 0
			}
			return f
		}, "right-padded with spaces"},
		{"header length", func(t *testing.T) []byte {
			f := clientFrame(t, nil)
			binary.BigEndian.PutUint32(f, 120)
			return f
		}, "HeaderLength 120"},
		{"unswapped id", func(t *testing.T) []byte {
			f := clientFrame(t, nil)
			id := uuid.New()
			copy(f[idAt:idAt+16], id[:]) // canonical order: the halves are not swapped
			return f
		}, "swapped halves"},
		{"digest", func(t *testing.T) []byte {
			f := clientFrame(t, nil)
			f[digestAt] ^= 0xff
			return f
		}, "PayloadDigest"},
		{"zero date", func(t *testing.T) []byte { return clientFrame(t, func(m *ssm.Message) { m.CreatedDate = 0 }) }, "CreatedDate"},
		{"client SYN", func(t *testing.T) []byte { return clientFrame(t, func(m *ssm.Message) { m.Flags = 1 }) }, "Flags 1, want 0"},
		{"ack flags", func(t *testing.T) []byte { return ackFrame(t, 7, agentID, 0) }, "want 0, 3, 0"},
		{"ack wrong id", func(t *testing.T) []byte { return ackFrame(t, 7, uuid.New(), 3) }, "the agent sent " + agentID.String()},
		{"bad flag value", func(t *testing.T) []byte {
			return clientFrame(t, func(m *ssm.Message) { m.PayloadType, m.Payload = ssm.PayloadFlag, []byte{0, 0, 0, 3} })
		}, "not a client flag"},
		{"wrong type", func(t *testing.T) []byte {
			return clientFrame(t, func(m *ssm.Message) { m.MessageType = ssm.TypeOutputStreamData })
		}, "client sent MessageType \"output_stream_data\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			v := newValidator(func(format string, args ...any) { got = append(got, sprintf(format, args...)) })
			v.sentByAgent(agentFrame)
			v.check(tt.frame(t))
			if tt.want == "" {
				if len(got) > 0 {
					t.Fatalf("violations on a good frame: %q", got)
				}
				return
			}
			if !strings.Contains(strings.Join(got, "\n"), tt.want) {
				t.Fatalf("violations %q, want one containing %q", got, tt.want)
			}
		})
	}
	t.Run("seq resent with other payload", func(t *testing.T) {
		var got []string
		v := newValidator(func(format string, args ...any) { got = append(got, sprintf(format, args...)) })
		v.check(clientFrame(t, nil))
		v.check(clientFrame(t, func(m *ssm.Message) { m.Payload = []byte("other") }))
		if len(got) != 1 || !strings.Contains(got[0], "resent with a different payload") {
			t.Fatalf("violations %q", got)
		}
	})
}

func startTestEndpoint(t *testing.T, cfg Config) *Endpoint {
	t.Helper()
	cfg.Targets = append(cfg.Targets, "i-0123456789abcdef0")
	e, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func startSession(t *testing.T, e *Endpoint) *awsssm.StartSessionOutput {
	t.Helper()
	api := awsssm.New(awsssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	out, err := api.StartSession(t.Context(), &awsssm.StartSessionInput{Target: aws.String("i-0123456789abcdef0"),
		DocumentName: aws.String(ssm.DocumentPortForwarding), Parameters: map[string][]string{"portNumber": {"5432"}}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpenDataChannel: a wrong token is refused and recorded; the right one
// gets the HandshakeRequest as agent message 0 with SYN.
func TestOpenDataChannel(t *testing.T) {
	e := startTestEndpoint(t, Config{AgentVersion: "3.3.987.0"})
	out := startSession(t, e)
	open := func(token string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.DialContext(t.Context(), aws.ToString(out.StreamUrl), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ssm.OpenDataChannel{MessageSchemaVersion: "1.0", RequestID: uuid.NewString(),
			TokenValue: token, ClientID: uuid.NewString(), ClientVersion: ssm.DefaultClientVersion})
		if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
		return c
	}
	bad := open("not-the-token")
	if _, _, err := bad.ReadMessage(); err == nil {
		t.Error("a wrong token was accepted")
	}
	bad.Close()
	if v := e.Violations(); len(v) != 1 || !strings.Contains(v[0], "wrong TokenValue") {
		t.Errorf("violations %q", v)
	}
	good := open(aws.ToString(out.TokenValue))
	defer good.Close()
	kind, b, err := good.ReadMessage()
	if err != nil || kind != websocket.BinaryMessage {
		t.Fatalf("first agent frame: %d %v", kind, err)
	}
	m, err := ssm.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var req ssm.HandshakeRequest
	_ = json.Unmarshal(m.Payload, &req)
	if m.SequenceNumber != 0 || m.Flags != 1 || m.PayloadType != ssm.PayloadHandshakeRequest || req.AgentVersion != "3.3.987.0" ||
		!bytes.Contains(m.Payload, []byte(`"Properties":{"localPortNumber":"0","portNumber":"5432","type":"LocalPortForwarding"}`)) {
		t.Errorf("HandshakeRequest seq %d flags %d type %d payload %s", m.SequenceNumber, m.Flags, m.PayloadType, m.Payload)
	}
}

// TestAPIShape: SigV4 must be present; unknown operations are AWS errors.
func TestAPIShape(t *testing.T) {
	e := startTestEndpoint(t, Config{})
	post := func(target string, auth bool) (*http.Response, map[string]string) {
		req, _ := http.NewRequestWithContext(context.WithoutCancel(t.Context()), http.MethodPost, e.URL()+"/", strings.NewReader("{}"))
		req.Header.Set("X-Amz-Target", target)
		if auth {
			req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	if resp, body := post("AmazonSSM.StartSession", false); resp.StatusCode != http.StatusForbidden || body["__type"] != "MissingAuthenticationTokenException" {
		t.Errorf("unsigned: %d %v", resp.StatusCode, body)
	}
	if resp, body := post("AmazonSSM.SendCommand", true); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Amzn-ErrorType") != "UnknownOperationException" {
		t.Errorf("unknown op: %d %v", resp.StatusCode, body)
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestDescribeInstanceInformation: connected targets are Online, the
// ConnectionLost set is ConnectionLost (and refuses sessions), the
// InstanceIds filter narrows the list, through the real SDK.
func TestDescribeInstanceInformation(t *testing.T) {
	const lost = "i-0aaaaaaaaaaaaaaaa"
	e := startTestEndpoint(t, Config{ConnectionLost: []string{lost}, AgentVersion: "3.3.987.0"})
	api := awsssm.New(awsssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	status := func(ids ...string) map[string]string {
		in := &awsssm.DescribeInstanceInformationInput{}
		if len(ids) > 0 {
			in.Filters = []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: ids}}
		}
		out, err := api.DescribeInstanceInformation(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, i := range out.InstanceInformationList {
			got[aws.ToString(i.InstanceId)] = string(i.PingStatus) + " " + aws.ToString(i.AgentVersion)
		}
		return got
	}
	for _, tc := range []struct {
		ids  []string
		want map[string]string
	}{
		{nil, map[string]string{"i-0123456789abcdef0": "Online 3.3.987.0", lost: "ConnectionLost 3.3.987.0"}},
		{[]string{lost}, map[string]string{lost: "ConnectionLost 3.3.987.0"}},
		{[]string{"i-0ffffffffffffffff"}, map[string]string{}},
	} {
		if got := status(tc.ids...); !maps.Equal(got, tc.want) {
			t.Errorf("filter %q: got %v, want %v", tc.ids, got, tc.want)
		}
	}
	_, err := api.StartSession(t.Context(), &awsssm.StartSessionInput{Target: aws.String(lost),
		DocumentName: aws.String(ssm.DocumentPortForwarding), Parameters: map[string][]string{"portNumber": {"5432"}}})
	if err == nil || !strings.Contains(err.Error(), "TargetNotConnected") {
		t.Errorf("StartSession on a lost node: %v", err)
	}
}
