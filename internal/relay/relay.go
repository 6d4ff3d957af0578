// Package relay is the one byte relay both proxies use once startup is
// over: bytes already read while routing are written first, then both
// directions are copied until each side has finished, with half-close
// propagated so that a client that goes away ends its upstream promptly.
//
// When both ends are *net.TCPConn, io.Copy uses splice(2) and no user-space
// buffer. Otherwise each direction borrows a pooled buffer.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
)

// bufSize is one TLS record's worth of plaintext.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Result counts the bytes each way, including replayed bytes.
type Result struct {
	// ToB is bytes written to b (read from a plus aPending);
	// ToA is bytes written to a (read from b plus bPending).
	ToB, ToA int64
	// Err is the first error that was not a clean end of stream.
	Err error
}

// Relay writes pendingToB to b and pendingToA to a, then copies a→b and
// b→a until both directions end. When one direction reaches EOF the other
// side is half-closed (CloseWrite) so the peer sees the end too; on any
// error both connections are closed. Relay closes a and b before it
// returns, and does not return before both copy goroutines have ended.
func Relay(a, b net.Conn, pendingToB, pendingToA []byte) Result {
	var res Result
	var errOnce sync.Once
	fail := func(err error) {
		if !isClosed(err) {
			errOnce.Do(func() { res.Err = err })
		}
		a.Close()
		b.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pipe(b, a, pendingToB)
		res.ToB = n
		if err != nil {
			fail(err)
		}
	}()
	n, err := pipe(a, b, pendingToA)
	res.ToA = n
	if err != nil {
		fail(err)
	}
	wg.Wait()
	a.Close()
	b.Close()
	return res
}

// pipe copies src to dst after writing pending, then half-closes dst.
func pipe(dst, src net.Conn, pending []byte) (int64, error) {
	var n int64
	if len(pending) > 0 {
		w, err := dst.Write(pending)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	c, err := copyConn(dst, src)
	n += c
	if err != nil {
		// Includes net.ErrClosed: the owner closed a connection to end
		// the session, so both directions must end now.
		return n, err
	}
	return n, closeWrite(dst)
}

func copyConn(dst, src net.Conn) (int64, error) {
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			return d.ReadFrom(s) // splice
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
}

// closeWrite half-closes conn when it can, else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !isClosed(err) {
			return err
		}
		return nil
	}
	return c.Close()
}

// isClosed reports errors that only mean the other direction already
// closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// writerOnly and readerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses
// the pooled buffer instead of allocating its own.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }
