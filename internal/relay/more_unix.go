//go:build unix

package relay

import (
	"io"
	"net"
	"os"
	"syscall"
)

// ReadNow returns one non-blocking read of src's socket (what the kernel
// holds, or 0 and no error at once), or nil when src is not a socket.
func ReadNow(src net.Conn) func(p []byte) (int, error) {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(p []byte) (int, error) {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), p)
			return true // never wait for readiness
		})
		switch {
		case err != nil: // closed, or past a deadline
			return 0, err
		case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
			return 0, nil
		case rerr != nil:
			return 0, os.NewSyscallError("read", rerr)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
