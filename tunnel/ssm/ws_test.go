package ssm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
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
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		wrote <- c.WriteMessage(websocket.BinaryMessage, []byte("from the agent"))
		<-r.Context().Done() // never reads
	}))
	defer srv.Close()
	ws, err := dialDataChannel(context.Background(), websocket.DefaultDialer, "ws"+strings.TrimPrefix(srv.URL, "http"), OpenDataChannel{})
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
