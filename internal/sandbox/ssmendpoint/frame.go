package ssmendpoint

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// The agent's own codec for data-channel messages (docs/ssm-protocol.md §5),
// written independently of the client's: big-endian integers, a 116-byte
// header, a 4-byte payload length, then the payload. The offsets are the
// validator's (validate.go); the golden vectors pin both (TestFrameGoldenVectors).

// Message types the agent and the service send or receive (§6.1).
const (
	typeInput       = "input_stream_data"
	typeOutput      = "output_stream_data"
	typeAck         = "acknowledge"
	typeClosed      = "channel_closed"
	typeStartPub    = "start_publication"
	typePausePub    = "pause_publication"
	typeFieldLength = typeEnd - typeStart
)

// Payload types (§6.1) and flag values (§6.3).
const (
	ptOutput            uint32 = 1
	ptHandshakeRequest  uint32 = 5
	ptHandshakeResponse uint32 = 6
	ptHandshakeComplete uint32 = 7
	ptFlag              uint32 = 10

	flagDisconnectToPort   uint32 = 1
	flagTerminateSession   uint32 = 2
	flagConnectToPortError uint32 = 3
)

// frame is one decoded data-channel message.
type frame struct {
	typ     string
	created uint64 // Unix epoch milliseconds
	seq     int64
	flags   uint64
	id      uuid.UUID
	ptype   uint32
	payload []byte
}

// encode serializes f. Like the agent's serializer it refuses an empty
// payload (§5).
func (f *frame) encode() ([]byte, error) {
	if len(f.payload) == 0 {
		return nil, errors.New("encode message: empty payload")
	}
	if len(f.typ) > typeFieldLength {
		return nil, fmt.Errorf("encode message: type %q too long", f.typ)
	}
	b := make([]byte, payloadStart+len(f.payload))
	binary.BigEndian.PutUint32(b, hdrLen)
	copy(b[typeStart:typeEnd], strings.Repeat(" ", typeFieldLength))
	copy(b[typeStart:], f.typ)
	binary.BigEndian.PutUint32(b[schemaAt:], 1)
	binary.BigEndian.PutUint64(b[createdAt:], f.created)
	binary.BigEndian.PutUint64(b[seqAt:], uint64(f.seq))
	binary.BigEndian.PutUint64(b[flagsAt:], f.flags)
	copy(b[idAt:], f.id[8:]) // least significant half first
	copy(b[idAt+8:], f.id[:8])
	sum := sha256.Sum256(f.payload)
	copy(b[digestAt:], sum[:])
	binary.BigEndian.PutUint32(b[payloadTypeAt:], f.ptype)
	binary.BigEndian.PutUint32(b[payloadLenAt:], uint32(len(f.payload)))
	copy(b[payloadStart:], f.payload)
	return b, nil
}

// decodeFrame parses b the way the agent does: fixed offsets, payload from
// HeaderLength+4 to the end, and only HeaderLength, MessageType and
// CreatedDate checked (the validator checks the rest for the tests).
func decodeFrame(b []byte) (*frame, error) {
	if len(b) < payloadStart {
		return nil, fmt.Errorf("message of %d bytes is shorter than its %d-byte header", len(b), payloadStart)
	}
	hl := binary.BigEndian.Uint32(b)
	if hl == 0 || int(hl)+4 > len(b) {
		return nil, fmt.Errorf("message header length %d does not fit %d bytes", hl, len(b))
	}
	f := &frame{
		typ:     strings.TrimSpace(strings.TrimRight(string(b[typeStart:typeEnd]), "\x00")),
		created: binary.BigEndian.Uint64(b[createdAt:]),
		seq:     int64(binary.BigEndian.Uint64(b[seqAt:])),
		flags:   binary.BigEndian.Uint64(b[flagsAt:]),
		id:      wireUUID(b[idAt : idAt+16]),
		ptype:   binary.BigEndian.Uint32(b[payloadTypeAt:]),
		payload: b[hl+4:],
	}
	if f.typ == "" || f.created == 0 {
		return nil, fmt.Errorf("message has no type or no creation date (type %q, created %d)", f.typ, f.created)
	}
	return f, nil
}

// ackPayload is the acknowledge content (§7.2), keys in wire order.
type ackPayload struct {
	Type       string `json:"AcknowledgedMessageType"`
	ID         string `json:"AcknowledgedMessageId"`
	Seq        int64  `json:"AcknowledgedMessageSequenceNumber"`
	Sequential bool   `json:"IsSequentialMessage"`
}

func flagPayload(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
