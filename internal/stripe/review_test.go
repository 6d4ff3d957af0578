package stripe

import (
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdsproxy/rdsproxy/internal/leakcheck"
)

// TestEndWithAGapFails: an END frame that arrives while an earlier frame
// never does, with every stripe then closed, fails the connection instead
// of leaving Read blocked for good.
func TestEndWithAGapFails(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	near0, far0 := net.Pipe()
	near1, far1 := net.Pipe()
	c := New(near0, Options{})
	defer c.Close()
	if err := c.Add(near1); err != nil {
		t.Fatal(err)
	}
	go func() {
		far1.Write(rawFrame(1, flagEnd, nil)) // seq 0 never comes
		far1.Close()
		far0.Close()
	}()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(c)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStripeLost) {
			t.Fatalf("Read: %v, want ErrStripeLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after every stripe closed")
	}
}

// TestDeadlineAfterClose: setting a deadline after Close returns, as
// net.Conn promises, even when a timer was armed before Close.
func TestDeadlineAfterClose(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := net.Pipe()
	defer b.Close()
	c := New(a, Options{})
	c.SetWriteDeadline(time.Now().Add(time.Hour))
	c.SetReadDeadline(time.Now().Add(time.Hour))
	c.Close()
	done := make(chan struct{})
	go func() {
		c.SetWriteDeadline(time.Now())
		c.SetDeadline(time.Now().Add(time.Minute))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("SetWriteDeadline after Close blocked")
	}
}

// TestTinyFramesCharged: a peer that sends one-byte frames after a gap is
// cut off once their charge (1 KiB each) passes the window, so it cannot
// make the receiver hold a thousand times the window in buffers.
func TestTinyFramesCharged(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	const window = 256 << 10
	near, far := net.Pipe()
	defer far.Close()
	c := New(near, Options{Window: window})
	defer c.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sent := make(chan int, 1)
	go func() {
		n := 0
		for seq := uint64(1); seq < 50_000; seq++ { // seq 0 never comes: all are held
			if _, err := far.Write(rawFrame(seq, 0, []byte{'x'})); err != nil {
				break
			}
			n++
		}
		sent <- n
	}()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no failure: %s", &c.recv)
	}
	runtime.ReadMemStats(&after)
	n := <-sent
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Read: %v, want the window's protocol error", err)
	}
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("cut off after %d one-byte frames; heap in use grew %d bytes", n, grew)
	if n > window/minCharge+64 || grew > 4*window {
		t.Errorf("took %d frames (window allows %d), heap grew %d bytes", n, window/minCharge, grew)
	}
}
