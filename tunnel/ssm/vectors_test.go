package ssm

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// goldenVectors is the subset of testdata/vectors.json (made with the
// reference plugin and agent code, see docs/ssm-protocol.md §13) the tests use.
type goldenVectors struct {
	Vectors []struct {
		Name   string `json:"name"`
		Fields struct {
			MessageType    string `json:"MessageType"`
			SchemaVersion  uint32 `json:"SchemaVersion"`
			CreatedDate    uint64 `json:"CreatedDate"`
			SequenceNumber int64  `json:"SequenceNumber"`
			Flags          uint64 `json:"Flags"`
			MessageID      string `json:"MessageId"`
			PayloadType    uint32 `json:"PayloadType"`
			PayloadHex     string `json:"payload_hex"`
		} `json:"fields"`
		SerializedHex string `json:"serialized_hex"`
		ParsedBack    struct {
			HeaderLength   uint32 `json:"HeaderLength"`
			MessageType    string `json:"MessageType"`
			SchemaVersion  uint32 `json:"SchemaVersion"`
			CreatedDate    uint64 `json:"CreatedDate"`
			SequenceNumber int64  `json:"SequenceNumber"`
			Flags          uint64 `json:"Flags"`
			MessageID      string `json:"MessageId"`
			DigestHex      string `json:"PayloadDigest_hex"`
			PayloadType    uint32 `json:"PayloadType"`
			PayloadLength  uint32 `json:"PayloadLength"`
			PayloadHex     string `json:"payload_hex"`
		} `json:"parsed_back"`
	} `json:"vectors"`
	Transcripts []struct {
		Name  string `json:"name"`
		Steps []struct {
			ReceivedSeq   int64    `json:"received_seq"`
			Payload       string   `json:"payload"`
			AcksSent      []int64  `json:"acks_sent_for_seq"`
			Delivered     []string `json:"delivered_to_handler_in_order"`
			ExpectedAfter int64    `json:"expected_seq_after"`
		} `json:"steps"`
	} `json:"transcripts"`
	VersionDecisions struct {
		PluginSide []struct {
			AgentVersion     string `json:"agent_version"`
			DisableKeepAlive bool   `json:"plugin_disables_smux_keepalive"`
			TerminateFlag    bool   `json:"plugin_sends_TerminateSession_flag_in_basic_mode"`
			Mux              bool   `json:"plugin_uses_smux_mux_mode"`
		} `json:"plugin_side_by_agent_version"`
	} `json:"version_decisions"`
}

func loadVectors(t testing.TB) *goldenVectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v goldenVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) == 0 {
		t.Fatal("no vectors in testdata/vectors.json")
	}
	return &v
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
