package ssmendpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// dataChannel opens a started session's websocket and sends its
// OpenDataChannel frame with clientID.
func dataChannel(t *testing.T, out *awsssm.StartSessionOutput, clientID string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.DialContext(t.Context(), aws.ToString(out.StreamUrl), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b, _ := json.Marshal(openDataChannel{MessageSchemaVersion: "1.0", RequestID: uuid.NewString(),
		TokenValue: aws.ToString(out.TokenValue), ClientID: clientID, ClientVersion: testClientVersion})
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	return c
}

// channelClosed reads agent frames for up to wait and returns the Output
// of a channel_closed among them; ok is false if none came.
func channelClosed(t *testing.T, c *websocket.Conn, wait time.Duration) (output string, ok bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for {
		kind, b, err := c.ReadMessage()
		if err != nil {
			return "", false
		}
		if kind != websocket.BinaryMessage {
			continue
		}
		f, err := decodeFrame(b)
		if err != nil {
			t.Fatalf("agent frame: %v", err)
		}
		if f.typ == typeClosed {
			var p struct{ Output string }
			if err := json.Unmarshal(f.payload, &p); err != nil {
				t.Fatalf("channel_closed payload: %v", err)
			}
			return p.Output, true
		}
	}
}

// TestStrictMode: a strict endpoint ends the session at the client's first
// protocol violation with a channel_closed that names it, and refuses a
// doubtful OpenDataChannel; a lenient one only records both and the
// session goes on.
func TestStrictMode(t *testing.T) {
	params := map[string][]string{"portNumber": {"5432"}}
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			e := startTestEndpoint(t, Config{Strict: strict})
			c := dataChannel(t, startSession(t, e, params), uuid.NewString())
			if kind, _, err := c.ReadMessage(); err != nil || kind != websocket.BinaryMessage {
				t.Fatalf("HandshakeRequest: websocket type %d, %v", kind, err)
			}
			bad := clientFrame(t, nil)
			bad[digestAt] ^= 0xff
			if err := c.WriteMessage(websocket.BinaryMessage, bad); err != nil {
				t.Fatal(err)
			}
			// Strict must close: a long wait. Lenient must not: a short one
			// (it can only pass falsely).
			wait := 2 * time.Second
			if strict {
				wait = 30 * time.Second
			}
			out, closed := channelClosed(t, c, wait)
			switch {
			case strict && (!closed || !strings.Contains(out, "protocol violation") || !strings.Contains(out, "PayloadDigest")):
				t.Errorf("strict: channel_closed %v %q, want one naming the bad PayloadDigest", closed, out)
			case !strict && closed:
				t.Errorf("lenient: the session ended (%q) on a violation", out)
			}

			doubtful := dataChannel(t, startSession(t, e, params), "not-a-uuid")
			_, _, err := doubtful.ReadMessage()
			var ce *websocket.CloseError
			refused := errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation
			if refused != strict {
				t.Errorf("ClientId not a UUID: first read %v, want refused=%v", err, strict)
			}
			v := strings.Join(e.Violations(), "\n")
			if !strings.Contains(v, "PayloadDigest") || !strings.Contains(v, `ClientId "not-a-uuid"`) {
				t.Errorf("violations %q: want both recorded", v)
			}
		})
	}
}
