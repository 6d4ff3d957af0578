package ssmendpoint

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

type goldenVectors struct {
	Vectors []struct {
		Name          string `json:"name"`
		Direction     string `json:"direction"`
		SerializedHex string `json:"serialized_hex"`
		Fields        struct {
			MessageType    string `json:"MessageType"`
			CreatedDate    uint64 `json:"CreatedDate"`
			SequenceNumber int64  `json:"SequenceNumber"`
			Flags          uint64 `json:"Flags"`
			MessageID      string `json:"MessageId"`
			PayloadType    uint32 `json:"PayloadType"`
		} `json:"fields"`
	} `json:"vectors"`
}

func loadVectorsFile(t testing.TB) *goldenVectors {
	t.Helper()
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var v goldenVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func hexBytes(s string) ([]byte, error) { return hex.DecodeString(s) }

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hexBytes(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
