package ssmendpoint

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// TestHandshakeResponseAckedFirst: the ack of the client's HandshakeResponse
// reaches the client before HandshakeComplete, every time. The real plugin
// goes deaf for good when any message arrives just after HandshakeComplete
// (see agent.handshake), so the other order would fail its tests at random.
func TestHandshakeResponseAckedFirst(t *testing.T) {
	e := startTestEndpoint(t, Config{})
	params := map[string][]string{"portNumber": {"5432"}}
	for i := range 40 {
		c := dataChannel(t, startSession(t, e, params), uuid.NewString())
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("HandshakeRequest: %v", err)
		}
		resp, _ := json.Marshal(handshakeResponse{ClientVersion: testClientVersion,
			ProcessedClientActions: []processedAction{{ActionType: "SessionType", ActionStatus: 1}}})
		hs := clientFrame(t, func(f *frame) { f.seq, f.flags, f.ptype, f.payload = 0, 1, ptHandshakeResponse, resp })
		if err := c.WriteMessage(websocket.BinaryMessage, hs); err != nil {
			t.Fatal(err)
		}
		if first := firstAfterResponse(t, c); first != typeAck {
			t.Fatalf("session %d: %s reached the client before the ack of its HandshakeResponse", i, first)
		}
		c.Close()
	}
}

// firstAfterResponse names the first agent frame that is either the ack of
// client message 0 or HandshakeComplete (resends of the request are skipped).
func firstAfterResponse(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the ack and HandshakeComplete: %v", err)
		}
		f, err := decodeFrame(b)
		if err != nil {
			t.Fatalf("agent frame: %v", err)
		}
		switch {
		case f.typ == typeAck:
			return typeAck
		case f.typ == typeOutput && f.ptype == ptHandshakeComplete:
			return "HandshakeComplete"
		}
	}
}
