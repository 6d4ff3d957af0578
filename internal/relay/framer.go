package relay

import "encoding/binary"

// framer follows PostgreSQL message boundaries in a byte stream without
// decoding anything: a 1-byte type, a 4-byte length that counts itself,
// then the body.
type framer struct {
	hdr       [5]byte
	hdrN      int // header bytes seen of the current message
	remaining int // body bytes still to come
	broken    bool
}

// feed advances over p.
func (f *framer) feed(p []byte) {
	for len(p) > 0 && !f.broken {
		if f.remaining > 0 {
			k := min(f.remaining, len(p))
			f.remaining -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.hdrN:], p)
		f.hdrN += k
		p = p[k:]
		if f.hdrN == len(f.hdr) {
			length := int64(binary.BigEndian.Uint32(f.hdr[1:]))
			if length < 4 {
				f.broken = true // not PostgreSQL framing: never claim a boundary
				return
			}
			f.remaining, f.hdrN = int(length-4), 0
		}
	}
}

// atBoundary reports whether the stream so far ends with a whole message.
func (f *framer) atBoundary() bool { return !f.broken && f.hdrN == 0 && f.remaining == 0 }
