//go:build linux || darwin

package server

import (
	"net"

	"golang.org/x/sys/unix"
)

// limitUnsent sets unsentLimit on c when it is a TCP socket. It fails
// silently: a kernel without the option queues as before.
func limitUnsent(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsentLimit)
	})
}
