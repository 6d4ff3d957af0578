package server

import (
	"bytes"
	"crypto/tls"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Records the database has already sent reach the relay in one go: after
// one blocking read, ReadBuffered hands over every record the socket holds
// (read ahead in one gulp), not only what TLS happened to have buffered,
// so the relay writes them to the client in one chunk.
func TestBufferedTLSReadsAhead(t *testing.T) {
	const records, size = 7, 8 << 10
	c, raw := tlsPeer{}.dial(t, func(c *tls.Conn) {
		for i := range records {
			if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, size)); err != nil {
				return
			}
		}
		c.Read(make([]byte, 1)) // until the client hangs up
	})
	const tls13Overhead = 5 + 1 + 16 // header, content type, tag
	waitInQueue(t, raw, records*(size+tls13Overhead))
	buf := make([]byte, 64<<10)
	got, err := c.Read(buf[:2<<10])
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := c.ReadBuffered(buf[got:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		got += n
	}
	if got != records*size {
		t.Fatalf("one blocking read and ReadBuffered took %d bytes; want all %d the socket held", got, records*size)
	}
	for i := range records {
		if !bytes.Equal(buf[i*size:(i+1)*size], bytes.Repeat([]byte{byte(i)}, size)) {
			t.Fatalf("record %d arrived altered or out of order", i)
		}
	}
}

// waitInQueue waits until conn's socket holds at least n unread bytes.
func waitInQueue(t *testing.T, conn net.Conn, n int) {
	t.Helper()
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	queued := 0
	var ioctlErr error
	err = rc.Read(func(fd uintptr) bool { // called again each time the socket turns readable
		queued, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		return ioctlErr != nil || queued >= n
	})
	if err != nil || ioctlErr != nil {
		t.Fatalf("waiting for %d bytes in the socket (%d there): %v, %v", n, queued, err, ioctlErr)
	}
}
