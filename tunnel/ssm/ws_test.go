package ssm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestReadsGoOnWhileAWriteBlocks: the agent stops reading its websocket
// while the port it writes to is slow, and then its own writes wait for
// ours to be read. A write that blocks must therefore not stop the read
// loop: here the peer never reads, the client's write of 64 MiB blocks,
// and the peer's message is still read.
func TestReadsGoOnWhileAWriteBlocks(t *testing.T) {
	wrote := make(chan error, 1)
	url := agentSide(t, func(c *websocket.Conn, r *http.Request) {
		wrote <- c.WriteMessage(websocket.BinaryMessage, []byte("from the agent"))
		<-r.Context().Done() // never reads
	})
	ws, err := dialDataChannel(context.Background(), websocket.DefaultDialer, url, OpenDataChannel{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.markBroken() // closes it without waiting for a writer
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		ws.writeBinary(make([]byte, 64<<20)) // blocks: nobody reads it
	}()
	for ws.wmu.TryLock() { // wait until the write holds the writer's lock
		ws.wmu.Unlock()
		time.Sleep(time.Millisecond)
	}
	read := make(chan string, 1)
	go func() {
		_, b, err := ws.conn().ReadMessage()
		if err != nil {
			read <- err.Error()
			return
		}
		read <- string(b)
	}()
	select {
	case got := <-read:
		if got != "from the agent" {
			t.Fatalf("read %q", got)
		}
	case <-time.After(30 * time.Second): // a hang guard
		ws.markBroken()
		t.Fatal("the read waited for the blocked write")
	}
	select {
	case <-writing:
		t.Fatal("the 64 MiB write finished: the test did not block it")
	default:
	}
	ws.markBroken() // ends the write
	<-writing
}

// A failed write of OpenDataChannel fails the dial with the write's error
// and closes the websocket: a channel the agent never heard of is not
// taken for open. (A shadowed error once dropped it.)
func TestOpenDataChannelWriteFails(t *testing.T) {
	upgraded := make(chan struct{})
	url := agentSide(t, func(c *websocket.Conn, _ *http.Request) {
		close(upgraded)
		c.ReadMessage() // until the client closes
	})
	errRefused := errors.New("the link failed after the handshake")
	var conn *writesFailAfterRead
	d := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn = &writesFailAfterRead{Conn: c, err: errRefused}
		return conn, nil
	}}
	ws, err := dialDataChannel(context.Background(), d, url, OpenDataChannel{})
	if err == nil {
		ws.markBroken()
		t.Fatal("the dial succeeded though OpenDataChannel was never sent")
	}
	<-upgraded // the handshake itself went through: the failure was the frame's
	if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "send OpenDataChannel") {
		t.Fatalf("dial error %q; want the failed OpenDataChannel write", err)
	}
	if _, err := conn.Conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the websocket's connection is still open after the failed dial: write = %v", err)
	}
}

// writesFailAfterRead is a connection whose writes fail with err once
// something was read from it: after a websocket handshake's answer.
type writesFailAfterRead struct {
	net.Conn
	err  error
	read atomic.Bool
}

func (c *writesFailAfterRead) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *writesFailAfterRead) Write(p []byte) (int, error) {
	if c.read.Load() {
		return 0, c.err
	}
	return c.Conn.Write(p)
}

// agentSide serves websocket upgrades until the test ends, handing each
// connection to serve (it is closed when serve returns), and returns the
// URL to dial.
func agentSide(t *testing.T, serve func(c *websocket.Conn, r *http.Request)) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, r)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}
