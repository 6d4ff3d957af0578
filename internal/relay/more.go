package relay

import "net"

// more reads, without blocking, what a connection has already received.
type more struct {
	read func(p []byte) (int, error)
	// free: asking costs no system call, so it is worth asking every time.
	free bool
}

// worthAsking reports whether to ask for more after a first read; filled
// says that read filled its buffer, so more is probably waiting.
func (m *more) worthAsking(filled bool) bool { return m.free || filled }

// moreFrom says how to read what src already holds, or nil when it cannot.
func moreFrom(src net.Conn) *more {
	if br, ok := src.(BufferedReader); ok {
		return &more{read: br.ReadBuffered, free: true}
	}
	if read := socketNow(src); read != nil {
		return &more{read: read}
	}
	return nil
}
