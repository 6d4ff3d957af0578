package e2e

import (
	"net"
	"sync"
	"testing"
	"time"
)

// link forwards TCP connections to an address as a network path would:
// each chunk arrives delay after it was read (0: at once), and reset
// resets every connection it carries, as a path that drops does.
type link struct {
	delay time.Duration
	mu    sync.Mutex
	conns []*net.TCPConn
}

// start listens on loopback, forwarding to target until the test ends,
// and returns its address.
func (l *link) start(t testing.TB, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); l.reset(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c.(*net.TCPConn), up.(*net.TCPConn))
			l.mu.Unlock()
			wg.Go(func() { delayCopy(up, c, l.delay) })
			wg.Go(func() { delayCopy(c, up, l.delay) })
		}
	})
	return ln.Addr().String()
}

// reset closes every connection with a reset.
func (l *link) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.SetLinger(0)
		c.Close()
	}
	l.conns = nil
}

// delayCopy copies src to dst, each chunk d after it was read, in order.
func delayCopy(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(d)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at)) // the link's latency, not synchronisation
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range ch {
	}
}
