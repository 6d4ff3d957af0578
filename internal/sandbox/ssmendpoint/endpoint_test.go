package ssmendpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

const (
	testClientVersion = "1.2.650.0"
	testTarget        = "i-0123456789abcdef0"
)

// TestAgentVersionRules checks the agent's mux/keep-alive decisions against
// the outputs of the real agent's comparison code.
func TestAgentVersionRules(t *testing.T) {
	raw, err := os.ReadFile(vectorsFile)
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
	if m := modeFor("3.0.196.0", testClientVersion); m.mux {
		t.Error("agent 3.0.196.0 must use basic mode")
	}
	if m := modeFor("3.1.1000.0", testClientVersion); !m.mux || m.keepAliveDisabled {
		t.Errorf("agent 3.1.1000.0: %+v, want mux with keep-alive on", m)
	}
}

func clientFrame(t *testing.T, mutate func(f *frame)) []byte {
	t.Helper()
	f := &frame{typ: typeInput, created: uint64(time.Now().UnixMilli()), seq: 1, id: uuid.New(), ptype: ptOutput, payload: []byte("data")}
	if mutate != nil {
		mutate(f)
	}
	b, err := f.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ackFrame(t *testing.T, seq int64, id uuid.UUID, flags uint64) []byte {
	t.Helper()
	p, _ := json.Marshal(ackPayload{Type: typeOutput, ID: id.String(), Seq: seq, Sequential: true})
	return clientFrame(t, func(f *frame) {
		f.typ, f.seq, f.flags, f.ptype, f.payload = typeAck, 0, flags, 0, p
	})
}

// TestValidatorCatchesViolations: each malformed client frame is reported,
// and well-formed ones are not.
func TestValidatorCatchesViolations(t *testing.T) {
	agentID := uuid.New()
	agentFrame, _ := (&frame{typ: typeOutput, created: 1, seq: 7, id: agentID, ptype: 1, payload: []byte("x")}).encode()
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
			for i := typeStart + len(typeInput); i < typeEnd; i++ {
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
			// Canonical order: the halves are not swapped. Read swapped,
			// byte 14 lands on the version nibble: a random byte 14 would
			// make it look like a v4 UUID in 1 run of 64 (with the variant),
			// so its high nibble is cleared (still a valid v4 UUID).
			id[14] &= 0x0f
			copy(f[idAt:idAt+16], id[:])
			return f
		}, "swapped halves"},
		{"digest", func(t *testing.T) []byte {
			f := clientFrame(t, nil)
			f[digestAt] ^= 0xff
			return f
		}, "PayloadDigest"},
		{"zero date", func(t *testing.T) []byte { return clientFrame(t, func(f *frame) { f.created = 0 }) }, "CreatedDate"},
		{"client SYN", func(t *testing.T) []byte { return clientFrame(t, func(f *frame) { f.flags = 1 }) }, "Flags 1, want 0"},
		{"ack flags", func(t *testing.T) []byte { return ackFrame(t, 7, agentID, 0) }, "want 0, 3, 0"},
		{"ack wrong id", func(t *testing.T) []byte { return ackFrame(t, 7, uuid.New(), 3) }, "the agent sent " + agentID.String()},
		{"bad flag value", func(t *testing.T) []byte {
			return clientFrame(t, func(f *frame) { f.ptype, f.payload = ptFlag, []byte{0, 0, 0, 3} })
		}, "not a client flag"},
		{"wrong type", func(t *testing.T) []byte {
			return clientFrame(t, func(f *frame) { f.typ = typeOutput })
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
		v.check(clientFrame(t, func(f *frame) { f.payload = []byte("other") }))
		if len(got) != 1 || !strings.Contains(got[0], "resent with a different payload") {
			t.Fatalf("violations %q", got)
		}
	})
}

func startTestEndpoint(t *testing.T, cfg Config) *Endpoint {
	t.Helper()
	cfg.Targets = append(cfg.Targets, testTarget)
	e, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func sdk(e *Endpoint, keyID, secret string) *awsssm.Client {
	return awsssm.New(awsssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(keyID, secret, "")})
}

func startSession(t *testing.T, e *Endpoint, params map[string][]string) *awsssm.StartSessionOutput {
	t.Helper()
	out, err := sdk(e, DefaultAccessKeyID, DefaultSecretAccessKey).StartSession(t.Context(), &awsssm.StartSessionInput{Target: aws.String(testTarget),
		DocumentName: aws.String(docPort), Parameters: params})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpenDataChannel: a wrong token is refused and recorded; the right one
// gets the HandshakeRequest as agent message 0 with SYN.
func TestOpenDataChannel(t *testing.T) {
	e := startTestEndpoint(t, Config{AgentVersion: "3.3.987.0"})
	out := startSession(t, e, map[string][]string{"portNumber": {"5432"}, "localPortNumber": {"25433"}})
	open := func(token string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.DialContext(t.Context(), aws.ToString(out.StreamUrl), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(openDataChannel{MessageSchemaVersion: "1.0", RequestID: uuid.NewString(),
			TokenValue: token, ClientID: uuid.NewString(), ClientVersion: testClientVersion})
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
	m, err := decodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	var req handshakeRequest
	_ = json.Unmarshal(m.payload, &req)
	if m.seq != 0 || m.flags != 1 || m.ptype != ptHandshakeRequest || req.AgentVersion != "3.3.987.0" ||
		!bytes.Contains(m.payload, []byte(`"Properties":{"localPortNumber":"25433","portNumber":"5432","type":"LocalPortForwarding"}`)) {
		t.Errorf("HandshakeRequest seq %d flags %d type %d payload %s", m.seq, m.flags, m.ptype, m.payload)
	}
}

// TestAPIShape: requests must be signed by known credentials with a valid
// SigV4 signature; unknown operations are AWS errors.
func TestAPIShape(t *testing.T) {
	e := startTestEndpoint(t, Config{})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL()+"/", strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", "AmazonSSM.StartSession")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || body["__type"] != "MissingAuthenticationTokenException" {
		t.Errorf("unsigned: %d %v", resp.StatusCode, body)
	}
	in := &awsssm.StartSessionInput{Target: aws.String(testTarget), DocumentName: aws.String(docPort)}
	for _, tc := range []struct{ name, keyID, secret, want string }{
		{"wrong secret", DefaultAccessKeyID, "not-the-secret", "InvalidSignatureException"},
		{"unknown key", "AKIAUNKNOWNEXAMPLE00", DefaultSecretAccessKey, "UnrecognizedClientException"},
	} {
		if _, err := sdk(e, tc.keyID, tc.secret).StartSession(t.Context(), in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	if st := e.Stats(); st.BadSignatures != 2 || st.SessionsStarted != 0 {
		t.Errorf("stats %+v: want 2 bad signatures and no session", st)
	}
	_, err = sdk(e, DefaultAccessKeyID, DefaultSecretAccessKey).SendCommand(t.Context(), &awsssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript")})
	if err == nil || !strings.Contains(err.Error(), "UnknownOperationException") {
		t.Errorf("unknown operation: %v", err)
	}
}

// TestStartSessionParameters: parameters are checked against the port
// documents and a pinned custom one (names, one value each, allowed
// patterns, required host) and defaults fill the rest, through the real
// SDK.
func TestStartSessionParameters(t *testing.T) {
	e := startTestEndpoint(t, Config{PinnedDocuments: map[string]int{"pinned-5480": 5480}})
	api := sdk(e, DefaultAccessKeyID, DefaultSecretAccessKey)
	for _, tc := range []struct {
		doc    string
		params map[string][]string
		want   string // "" = accepted
	}{
		{docPort, nil, ""},
		{docPort, map[string][]string{"portNumber": {"5432"}, "localPortNumber": {"0"}}, ""},
		{docRemoteHost, map[string][]string{"host": {"db.example.internal"}, "portNumber": {"5432"}}, ""},
		{docPort, map[string][]string{"portNumber": {"0"}}, `"portNumber" value "0" does not match`},
		{docPort, map[string][]string{"portNumber": {"65536"}}, "does not match"},
		{docPort, map[string][]string{"portNumber": {"5432", "5433"}}, "exactly one value"},
		{docPort, map[string][]string{"localPortNumber": {"-1"}}, "does not match"},
		{docPort, map[string][]string{"host": {"db"}}, `"host" is not defined`},
		{docRemoteHost, map[string][]string{"portNumber": {"5432"}}, `"host" is required`},
		{docRemoteHost, map[string][]string{"host": {"db example"}}, "does not match"},
		{"AWS-StartSSHSession", nil, "InvalidDocument"},
		{"pinned-5480", nil, ""},
		{"pinned-5480", map[string][]string{"localPortNumber": {"25433"}}, ""},
		{"pinned-5480", map[string][]string{"portNumber": {"22"}}, `"portNumber" is not defined`},
	} {
		_, err := api.StartSession(t.Context(), &awsssm.StartSessionInput{Target: aws.String(testTarget),
			DocumentName: aws.String(tc.doc), Parameters: tc.params})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %v: %v", tc.doc, tc.params, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %v: %v, want %q", tc.doc, tc.params, err, tc.want)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var props []map[string]string
	for _, r := range e.sessions {
		props = append(props, r.properties)
	}
	for _, want := range []map[string]string{
		{"portNumber": "80", "localPortNumber": "0", "type": "LocalPortForwarding"},
		{"portNumber": "5480", "localPortNumber": "25433", "type": "LocalPortForwarding"},
	} {
		if !slices.ContainsFunc(props, func(p map[string]string) bool { return maps.Equal(p, want) }) {
			t.Errorf("no session with the properties %v in %v", want, props)
		}
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestDescribeInstanceInformation: connected targets are Online, the
// ConnectionLost set is ConnectionLost (and refuses sessions), the
// InstanceIds filter narrows the list, through the real SDK.
func TestDescribeInstanceInformation(t *testing.T) {
	const lost = "i-0aaaaaaaaaaaaaaaa"
	e := startTestEndpoint(t, Config{ConnectionLost: []string{lost}, AgentVersion: "3.3.987.0"})
	api := sdk(e, DefaultAccessKeyID, DefaultSecretAccessKey)
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
		DocumentName: aws.String(docPort), Parameters: map[string][]string{"portNumber": {"5432"}}})
	if err == nil || !strings.Contains(err.Error(), "TargetNotConnected") {
		t.Errorf("StartSession on a lost node: %v", err)
	}
}
