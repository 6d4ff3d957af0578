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
	wsWriteTimeout = 30 * time.Second
	// wsStallLimit bounds one data write. The agent stops reading its
	// websocket while the port it writes to is slow (a database busy with
	// a COPY in), and that backpressure can last longer than a control
	// write should: dropping the websocket then loses every message in
	// flight both ways, which the agent, resending only its oldest
	// unacknowledged message per 100 ms tick, repairs at ten a second.
	wsStallLimit     = 5 * time.Minute
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

// wsConn serializes writes to the session's current websocket; gorilla
// allows one concurrent writer (control frames excepted). After a failure
// writes are dropped until swap installs a resumed connection: the reliable
// stream retransmits what was lost.
//
// A write can block for as long as the agent does not read (wsStallLimit),
// so it holds only wmu: the read loop, which takes the connection from mu,
// must keep reading meanwhile. The agent's read loop stops while its port
// is slow and its writes wait for ours; a client that stopped reading
// while its write waited closed that circle, and both sides stood still
// until the agent dropped the websocket.
type wsConn struct {
	wmu      sync.Mutex // one data write at a time; held while it blocks
	mu       sync.Mutex // guards the fields below; never held while blocking
	c        *websocket.Conn
	broken   bool
	writeErr error // why the current connection broke, if a write broke it
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
	err = c.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if err == nil {
		err = c.WriteMessage(websocket.TextMessage, b)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("send OpenDataChannel: %w", err)
	}
	return &wsConn{c: c}, nil
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

// writeBinary sends one message. A failed write closes the connection, so
// the read loop notices and resumes or ends the session; the error itself
// is not returned, because the reliable stream recovers the message.
func (w *wsConn) writeBinary(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	c, broken := w.c, w.broken
	w.mu.Unlock()
	if broken {
		return nil
	}
	err := c.SetWriteDeadline(time.Now().Add(wsStallLimit))
	if err == nil {
		err = c.WriteMessage(websocket.BinaryMessage, b)
	}
	if err != nil {
		w.mu.Lock()
		if w.c == c && !w.broken { // not a connection swap already replaced
			w.broken, w.writeErr = true, fmt.Errorf("write: %w", err)
		}
		w.mu.Unlock()
		c.Close()
	}
	return nil
}

// readFailure explains a failed read: a read fails with "use of closed
// network connection" after a failed write closed the connection, and the
// write error is the one that says what happened.
func (w *wsConn) readFailure(readErr error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writeErr != nil {
		return w.writeErr
	}
	return readErr
}

func (w *wsConn) conn() *websocket.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c
}

// markBroken drops writes until swap.
func (w *wsConn) markBroken() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.broken = true
	w.c.Close()
}

// swap installs a resumed connection.
func (w *wsConn) swap(n *wsConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.Close()
	w.c, w.broken, w.writeErr = n.c, false, nil
}

func (w *wsConn) ping() error {
	return w.conn().WriteControl(websocket.PingMessage, []byte("keepalive"), time.Now().Add(wsWriteTimeout))
}

// close sends a close frame (best effort) and closes the connection.
func (w *wsConn) close() error {
	c := w.conn()
	_ = c.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return c.Close()
}
