package relay

import "encoding/binary"

// framer follows PostgreSQL message boundaries in a byte stream without
// decoding anything: a 1-byte type, a 4-byte length that counts itself,
// then the body.
type framer struct {
	hdr       [headerLen]byte
	hdrN      int // header bytes seen of the current message
	remaining int // body bytes still to come
	broken    bool
	last      byte              // the type of the message begun last
	copyOut   bool              // between CopyOutResponse and the end of that COPY
	rowBytes  int64             // the size of the rows begun since the last other message
	word      [LastWordLen]byte // the start of the body of the error or notice begun last
	wordN     int               // bytes of it in word
}

// LastWordLen is how much of an ErrorResponse's or NoticeResponse's body
// the framer keeps (see lastWord): enough for the fields PostgreSQL sends
// first, the severity twice and the SQLSTATE, whatever the language of the
// first.
const LastWordLen = 64

// headerLen is a message's type byte and length.
const headerLen = 5

// feed advances over p. A COPY out is a stream of short messages (a row
// each), so a header that p holds whole is read in place.
func (f *framer) feed(p []byte) {
	for len(p) > 0 && !f.broken {
		switch {
		case f.remaining > 0:
			k := min(f.remaining, len(p))
			if (f.last == 'E' || f.last == 'N') && f.wordN < LastWordLen {
				f.wordN += copy(f.word[f.wordN:], p[:k])
			}
			f.remaining -= k
			p = p[k:]
		case f.hdrN == 0 && len(p) >= headerLen:
			f.begin(p[0], binary.BigEndian.Uint32(p[1:headerLen]))
			p = p[headerLen:]
		default: // a header cut between two writes
			k := copy(f.hdr[f.hdrN:], p)
			f.hdrN += k
			p = p[k:]
			if f.hdrN == headerLen {
				f.hdrN = 0
				f.begin(f.hdr[0], binary.BigEndian.Uint32(f.hdr[1:]))
			}
		}
	}
}

// feedOne advances over p to the end of the message the stream is inside
// or, at a boundary, of the next one, and returns how many bytes it took;
// with broken framing, all of them. It feeds a message at a time, so it is
// for the rare path (see Session.setAside), not the copy's.
func (f *framer) feedOne(p []byte) int {
	n := 0
	if f.atBoundary() && len(p) > 0 {
		n = min(headerLen, len(p)) // then the body's length is known
		f.feed(p[:n])
	}
	for n < len(p) && !f.atBoundary() && !f.broken {
		k := min(f.toBoundary(), len(p)-n)
		f.feed(p[n : n+k])
		n += k
	}
	if f.broken {
		return len(p)
	}
	return n
}

// begin starts a message whose header gives its type and length.
func (f *framer) begin(typ byte, length uint32) {
	if length < 4 {
		f.broken = true // not PostgreSQL framing: never claim a boundary
		return
	}
	f.remaining = int(length - 4)
	f.last = typ
	switch typ {
	case 'H': // CopyOutResponse
		f.copyOut = true
	case 'c', 'E', 'Z': // CopyDone, ErrorResponse, ReadyForQuery
		f.copyOut = false
	}
	f.wordN = 0
	if f.midRows() {
		f.rowBytes += 1 + int64(length)
	} else {
		f.rowBytes = 0
	}
}

// midRows reports whether the stream so far ends inside a result's rows
// (DataRow) or a COPY out's data (CopyData after CopyOutResponse, not the
// CopyData of replication's COPY BOTH, which a walsender sends one at a
// time as they happen). More messages nearly always follow those without
// the client saying anything: at least the one that ends the result (see
// Session.hold for the exceptions).
func (f *framer) midRows() bool {
	return !f.broken && (f.last == 'D' || f.last == 'd' && f.copyOut)
}

// inBulk reports whether the stream is inside rows (see midRows) that
// have come n bytes or more without another message between them: a
// result or COPY out that streams, not the next of many short ones. The
// bytes counted are those that have come, not a row's declared length: a
// single large value starts like any other result.
func (f *framer) inBulk(n int64) bool {
	return f.midRows() && f.rowBytes-int64(f.remaining) >= n
}

// lastWord returns, when the stream so far ends with a whole
// ErrorResponse or NoticeResponse, the start of its body (up to
// LastWordLen bytes); else nil.
func (f *framer) lastWord() []byte {
	if f.last != 'E' && f.last != 'N' || !f.atBoundary() {
		return nil
	}
	return f.word[:f.wordN]
}

// atBoundary reports whether the stream so far ends with a whole message.
func (f *framer) atBoundary() bool { return !f.broken && f.hdrN == 0 && f.remaining == 0 }

// toBoundary is how many more bytes end the message the stream is inside:
// 0 at a boundary or when the framing is broken, else the rest of a cut
// header (the body's length is known only after it) or of the body.
func (f *framer) toBoundary() int {
	switch {
	case f.broken:
		return 0
	case f.hdrN > 0:
		return headerLen - f.hdrN
	}
	return f.remaining
}
