package ssm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Wire layout of a data-channel message (docs/ssm-protocol.md §5). All integers
// are big-endian. The header is HeaderLength bytes, followed by a 4-byte
// payload length and the payload.
const (
	offHeaderLength   = 0   // uint32, always 116
	offMessageType    = 4   // 32 bytes ASCII, right-padded with spaces
	offSchemaVersion  = 36  // uint32, always 1
	offCreatedDate    = 40  // uint64, Unix epoch milliseconds
	offSequenceNumber = 48  // int64
	offFlags          = 56  // uint64
	offMessageID      = 64  // 16 bytes: UUID bytes 8..15, then 0..7
	offPayloadDigest  = 80  // SHA-256 of the payload
	offPayloadType    = 112 // uint32
	offPayloadLength  = 116 // uint32
	offPayload        = 120

	// HeaderLength is the value of the HeaderLength field: the offset of
	// the PayloadLength field.
	HeaderLength = offPayloadLength
	// FrameOverhead is the number of bytes a message adds to its payload.
	FrameOverhead = offPayload

	messageTypeSize = 32
	schemaVersion   = 1
)

// Message types (docs/ssm-protocol.md §6.1).
const (
	TypeInputStreamData  = "input_stream_data"
	TypeOutputStreamData = "output_stream_data"
	TypeAcknowledge      = "acknowledge"
	TypeChannelClosed    = "channel_closed"
	TypeStartPublication = "start_publication"
	TypePausePublication = "pause_publication"
)

// Payload types (docs/ssm-protocol.md §6.1).
const (
	PayloadOutput               uint32 = 1
	PayloadError                uint32 = 2
	PayloadSize                 uint32 = 3
	PayloadParameter            uint32 = 4
	PayloadHandshakeRequest     uint32 = 5
	PayloadHandshakeResponse    uint32 = 6
	PayloadHandshakeComplete    uint32 = 7
	PayloadEncChallengeRequest  uint32 = 8
	PayloadEncChallengeResponse uint32 = 9
	PayloadFlag                 uint32 = 10
)

// Flag payload values (docs/ssm-protocol.md §6.3).
const (
	FlagDisconnectToPort   uint32 = 1
	FlagTerminateSession   uint32 = 2
	FlagConnectToPortError uint32 = 3
)

// Header flag values (docs/ssm-protocol.md §6.2).
const (
	HeaderFlagSYN uint64 = 1
	HeaderFlagAck uint64 = 3
)

// Decode errors a caller may branch on.
var (
	ErrShortFrame      = errors.New("frame shorter than the 120-byte message header")
	ErrHeaderLength    = errors.New("bad header length")
	ErrDigestMismatch  = errors.New("payload digest mismatch")
	ErrEmptyPayload    = errors.New("empty payload")
	ErrMessageType     = errors.New("bad message type")
	ErrZeroCreatedDate = errors.New("created date is zero")
	ErrPayloadLength   = errors.New("payload length field does not match the payload")
)

// Message is one data-channel message. Decode fills every field; Encode
// computes HeaderLength, PayloadDigest and PayloadLength itself.
type Message struct {
	HeaderLength   uint32
	MessageType    string
	SchemaVersion  uint32
	CreatedDate    uint64 // Unix epoch milliseconds
	SequenceNumber int64
	Flags          uint64
	MessageID      uuid.UUID
	PayloadDigest  [sha256.Size]byte
	PayloadType    uint32
	PayloadLength  uint32
	// Payload aliases the decoded frame; copy it to keep it beyond the
	// frame's lifetime.
	Payload []byte
}

// Encode appends the wire form of m to buf. SchemaVersion 0 is written as 1.
// Like the reference serializers it refuses an empty payload.
func (m *Message) Encode(buf []byte) ([]byte, error) {
	if len(m.Payload) == 0 {
		return buf, fmt.Errorf("encode %s: %w", m.MessageType, ErrEmptyPayload)
	}
	if m.MessageType == "" || len(m.MessageType) > messageTypeSize {
		return buf, fmt.Errorf("encode %q: %w", m.MessageType, ErrMessageType)
	}
	start := len(buf)
	buf = append(buf, make([]byte, offPayload)...)
	h := buf[start:]
	binary.BigEndian.PutUint32(h[offHeaderLength:], HeaderLength)
	copy(h[offMessageType:offSchemaVersion], m.MessageType)
	for i := offMessageType + len(m.MessageType); i < offSchemaVersion; i++ {
		h[i] = ' '
	}
	sv := m.SchemaVersion
	if sv == 0 {
		sv = schemaVersion
	}
	binary.BigEndian.PutUint32(h[offSchemaVersion:], sv)
	binary.BigEndian.PutUint64(h[offCreatedDate:], m.CreatedDate)
	binary.BigEndian.PutUint64(h[offSequenceNumber:], uint64(m.SequenceNumber))
	binary.BigEndian.PutUint64(h[offFlags:], m.Flags)
	putMessageID(h[offMessageID:offPayloadDigest], m.MessageID)
	digest := sha256.Sum256(m.Payload)
	copy(h[offPayloadDigest:offPayloadType], digest[:])
	binary.BigEndian.PutUint32(h[offPayloadType:], m.PayloadType)
	binary.BigEndian.PutUint32(h[offPayloadLength:], uint32(len(m.Payload)))
	return append(buf, m.Payload...), nil
}

// putMessageID writes id with its two 8-byte halves swapped (§5).
func putMessageID(dst []byte, id uuid.UUID) {
	copy(dst[0:8], id[8:16])
	copy(dst[8:16], id[0:8])
}

func getMessageID(src []byte) uuid.UUID {
	var id uuid.UUID
	copy(id[8:16], src[0:8])
	copy(id[0:8], src[8:16])
	return id
}

// Decode parses one websocket message. It checks lengths before slicing and
// validates like the reference client: HeaderLength, MessageType,
// CreatedDate, PayloadLength and digest. start_publication and
// pause_publication skip validation (the service may send them with zero
// header fields).
func Decode(frame []byte) (*Message, error) {
	if len(frame) < offPayload {
		return nil, fmt.Errorf("decode %d-byte frame: %w", len(frame), ErrShortFrame)
	}
	m := &Message{
		HeaderLength:   binary.BigEndian.Uint32(frame[offHeaderLength:]),
		MessageType:    trimMessageType(frame[offMessageType:offSchemaVersion]),
		SchemaVersion:  binary.BigEndian.Uint32(frame[offSchemaVersion:]),
		CreatedDate:    binary.BigEndian.Uint64(frame[offCreatedDate:]),
		SequenceNumber: int64(binary.BigEndian.Uint64(frame[offSequenceNumber:])),
		Flags:          binary.BigEndian.Uint64(frame[offFlags:]),
		MessageID:      getMessageID(frame[offMessageID:offPayloadDigest]),
		PayloadType:    binary.BigEndian.Uint32(frame[offPayloadType:]),
		PayloadLength:  binary.BigEndian.Uint32(frame[offPayloadLength:]),
		Payload:        frame[offPayload:],
	}
	copy(m.PayloadDigest[:], frame[offPayloadDigest:offPayloadType])
	if m.MessageType == TypeStartPublication || m.MessageType == TypePausePublication {
		return m, nil
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("decode %q seq %d: %w", m.MessageType, m.SequenceNumber, err)
	}
	return m, nil
}

func (m *Message) validate() error {
	switch {
	case m.HeaderLength != HeaderLength:
		return fmt.Errorf("%w %d", ErrHeaderLength, m.HeaderLength)
	case m.MessageType == "":
		return ErrMessageType
	case m.CreatedDate == 0:
		return ErrZeroCreatedDate
	case int(m.PayloadLength) != len(m.Payload):
		return fmt.Errorf("%w: field %d, payload %d bytes", ErrPayloadLength, m.PayloadLength, len(m.Payload))
	}
	if m.PayloadLength != 0 && sha256.Sum256(m.Payload) != m.PayloadDigest {
		return ErrDigestMismatch
	}
	return nil
}

// trimMessageType strips NULs, then whitespace, as the reference parsers do.
func trimMessageType(b []byte) string {
	b = bytes.Trim(b, "\x00")
	return string(bytes.TrimSpace(b))
}
