package ssm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

const (
	wsWriteTimeout   = 30 * time.Second
	wsPingInterval   = 5 * time.Minute // what the plugin does (§3)
	wsMaxMessageSize = 4 << 20
)

// OpenDataChannel is the first (text) frame on the websocket (§4). Field
// order is the wire order.
type OpenDataChannel struct {
	MessageSchemaVersion string `json:"MessageSchemaVersion"`
	RequestID            string `json:"RequestId"`
	TokenValue           string `json:"TokenValue"`
	ClientID             string `json:"ClientId"`
	ClientVersion        string `json:"ClientVersion,omitempty"`
}

// wsConn serializes writes to one websocket; gorilla allows one concurrent
// writer (control frames excepted).
type wsConn struct {
	mu sync.Mutex
	c  *websocket.Conn
}

// dialDataChannel opens the websocket at streamURL (verbatim, §2.1) and
// sends the OpenDataChannel frame.
func dialDataChannel(ctx context.Context, d *websocket.Dialer, streamURL string, open OpenDataChannel) (*wsConn, error) {
	c, resp, err := d.DialContext(ctx, streamURL, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("open data channel websocket to %s: %w", redactURL(streamURL), err)
	}
	c.SetReadLimit(wsMaxMessageSize)
	open.MessageSchemaVersion = "1.0"
	open.RequestID = uuid.NewString()
	b, err := json.Marshal(open)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("encode OpenDataChannel: %w", err)
	}
	w := &wsConn{c: c}
	if err := w.write(websocket.TextMessage, b); err != nil {
		c.Close()
		return nil, fmt.Errorf("send OpenDataChannel: %w", err)
	}
	return w, nil
}

// redactURL keeps scheme, host and path; query parameters are opaque and
// may carry credentials.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable stream URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func (w *wsConn) write(kind int, b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.c.SetWriteDeadline(time.Now().Add(wsWriteTimeout)); err != nil {
		return err
	}
	return w.c.WriteMessage(kind, b)
}

func (w *wsConn) writeBinary(b []byte) error { return w.write(websocket.BinaryMessage, b) }

func (w *wsConn) ping() error {
	return w.c.WriteControl(websocket.PingMessage, []byte("keepalive"), time.Now().Add(wsWriteTimeout))
}

// close sends a close frame (best effort) and closes the connection.
func (w *wsConn) close() error {
	_ = w.c.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return w.c.Close()
}
