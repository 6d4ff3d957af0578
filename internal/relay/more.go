package relay

import "net"

// moreFrom returns a read of what src has already received that never
// waits (0 and no error when nothing is there), or nil when src cannot say.
// It may cost a system call, so the copy asks it only after a first read
// filled its buffer: more is probably waiting then, and a small request or
// reply costs nothing extra.
func moreFrom(src net.Conn) func(p []byte) (int, error) {
	if br, ok := src.(BufferedReader); ok {
		return br.ReadBuffered
	}
	return ReadNow(src)
}
