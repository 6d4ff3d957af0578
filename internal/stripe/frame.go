package stripe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	headerLen = 12

	flagCompressed = 1 << 0
	flagEnd        = 1 << 1
	flagCredit     = 1 << 2
	knownFlags     = flagCompressed | flagEnd | flagCredit

	// creditLen is the payload of a CREDIT frame: the cumulative count of
	// payload bytes consumed, a uint64.
	creditLen = 8

	// maxPayload bounds a frame's payload before compression and after
	// decompression; Options.MaxChunk is capped to it.
	maxPayload = 256 << 10
	// maxWire bounds a frame's payload on the wire: a raw chunk, or a
	// compressed one (kept only when smaller than its input), with room for
	// zstd's worst-case expansion.
	maxWire = maxPayload + 4<<10
)

// ErrProtocol is wrapped in the error of a Conn whose peer sent something
// this package never sends: the error names the problem.
var ErrProtocol = errors.New("stripe protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// putHeader writes a frame header into b[:headerLen].
func putHeader(b []byte, seq uint64, flags byte, length int) {
	binary.BigEndian.PutUint64(b[0:8], seq)
	b[8] = flags
	b[9] = byte(length >> 16)
	b[10] = byte(length >> 8)
	b[11] = byte(length)
}

// inFrame is one received frame: data is its payload after decompression,
// taken from the buffer pool.
type inFrame struct {
	seq      uint64
	end      bool
	credit   bool // a CREDIT frame: consumed holds its count, data is nil
	consumed uint64
	data     []byte
	off      int // bytes of data already read
	wire     int // bytes on the wire, header included
}

// readFrame reads one frame from r. It returns io.EOF only at a frame
// boundary; EOF inside a frame is io.ErrUnexpectedEOF. hdr is scratch space.
// A compressed payload needs codec (nil: protocol error).
func readFrame(r io.Reader, codec *Codec, hdr *[headerLen]byte) (*inFrame, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	f := &inFrame{seq: binary.BigEndian.Uint64(hdr[0:8])}
	flags := hdr[8]
	length := int(hdr[9])<<16 | int(hdr[10])<<8 | int(hdr[11])
	if err := checkHeader(flags, length, codec); err != nil {
		return nil, fmt.Errorf("frame %d: %w", f.seq, err)
	}
	f.end = flags&flagEnd != 0
	f.wire = headerLen + length
	if f.end {
		return f, nil
	}
	if flags&flagCredit != 0 {
		return readCredit(r, f, hdr)
	}
	payload := getBuf(length)
	if _, err := io.ReadFull(r, payload); err != nil {
		putBuf(payload)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("frame %d payload: %w", f.seq, err)
	}
	if flags&flagCompressed == 0 {
		f.data = payload
		return f, nil
	}
	data, err := codec.decode(payload)
	putBuf(payload)
	if err != nil {
		return nil, fmt.Errorf("frame %d: %w", f.seq, err)
	}
	f.data = data
	return f, nil
}

// readCredit reads the payload of CREDIT frame f, whose header is in hdr.
func readCredit(r io.Reader, f *inFrame, hdr *[headerLen]byte) (*inFrame, error) {
	if f.seq != 0 {
		return nil, protoErr("CREDIT frame with seq %d", f.seq)
	}
	if _, err := io.ReadFull(r, hdr[:creditLen]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("CREDIT frame payload: %w", err)
	}
	f.credit = true
	f.consumed = binary.BigEndian.Uint64(hdr[:creditLen])
	return f, nil
}

// creditFrame returns a CREDIT frame announcing consumed bytes.
func creditFrame(consumed uint64) []byte {
	b := getBuf(headerLen + creditLen)
	putHeader(b, 0, flagCredit, creditLen)
	binary.BigEndian.PutUint64(b[headerLen:], consumed)
	return b
}

func checkHeader(flags byte, length int, codec *Codec) error {
	switch {
	case flags&^knownFlags != 0:
		return protoErr("unknown flags %#x", flags)
	case length > maxWire:
		return protoErr("payload of %d bytes exceeds %d", length, maxWire)
	case flags&flagCredit != 0 && (flags != flagCredit || length != creditLen):
		return protoErr("CREDIT frame with flags %#x and %d bytes", flags, length)
	case flags&flagEnd != 0 && (length != 0 || flags&flagCompressed != 0):
		return protoErr("END frame with a payload")
	case flags&flagEnd == 0 && length == 0:
		return protoErr("empty data frame")
	case flags&flagCompressed != 0 && codec == nil:
		return protoErr("compressed frame but this side has no codec")
	}
	return nil
}

// minCharge is what the flow-control window counts for a data frame of
// fewer bytes: a frame costs its buffer (at least 1 KiB), its record and
// its map entry whatever its payload, so counting payload bytes alone
// would let a peer that sends one-byte frames make the receiver hold a
// thousand times its window.
const minCharge = 1 << 10

// charge is what a data frame of n payload bytes counts against the
// window, on both sides.
func charge(n int) int { return max(n, minCharge) }
