package ssmendpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Layout of a data-channel message (docs/ssm-protocol.md §5), written out again
// here so the double checks the client independently of its codec.
const (
	hdrLen        = 116
	payloadStart  = 120
	typeStart     = 4
	typeEnd       = 36
	schemaAt      = 36
	createdAt     = 40
	seqAt         = 48
	flagsAt       = 56
	idAt          = 64
	digestAt      = 80
	payloadTypeAt = 112
	payloadLenAt  = 116

	maxRemembered = 1 << 18
)

// validator checks every client frame of one session against §5–§7 and
// remembers what the agent sent, to check the client's acks.
type validator struct {
	report func(format string, args ...any)

	mu        sync.Mutex
	agentIDs  map[int64]uuid.UUID // agent seq → MessageId, until acked
	clientSeq map[int64][32]byte  // client seq → payload digest
	idSeq     map[uuid.UUID]int64 // client MessageId → seq
}

func newValidator(report func(string, ...any)) *validator {
	return &validator{report: report, agentIDs: make(map[int64]uuid.UUID),
		clientSeq: make(map[int64][32]byte), idSeq: make(map[uuid.UUID]int64)}
}

// sentByAgent records an output_stream_data frame the agent sends.
func (v *validator) sentByAgent(frame []byte) {
	if len(frame) < payloadStart || string(bytes.TrimRight(frame[typeStart:typeEnd], " ")) != "output_stream_data" {
		return
	}
	seq := int64(binary.BigEndian.Uint64(frame[seqAt:]))
	v.mu.Lock()
	v.agentIDs[seq] = wireUUID(frame[idAt : idAt+16])
	v.mu.Unlock()
}

func wireUUID(b []byte) uuid.UUID {
	var id uuid.UUID
	copy(id[8:], b[:8])
	copy(id[:8], b[8:16])
	return id
}

// check validates one binary frame from the client and returns its type.
func (v *validator) check(f []byte) string {
	if len(f) < payloadStart {
		v.report("frame of %d bytes is shorter than the 120-byte header", len(f))
		return ""
	}
	typ := v.checkType(f[typeStart:typeEnd])
	if hl := binary.BigEndian.Uint32(f); hl != hdrLen {
		v.report("%s: HeaderLength %d, want 116", typ, hl)
	}
	if sv := binary.BigEndian.Uint32(f[schemaAt:]); sv != 1 {
		v.report("%s: SchemaVersion %d, want 1", typ, sv)
	}
	created := time.UnixMilli(int64(binary.BigEndian.Uint64(f[createdAt:])))
	if d := time.Since(created); d > 24*time.Hour || d < -24*time.Hour {
		v.report("%s: CreatedDate %s is not a current epoch-milliseconds time", typ, created)
	}
	payload := f[payloadStart:]
	if pl := binary.BigEndian.Uint32(f[payloadLenAt:]); int(pl) != len(payload) || pl == 0 {
		v.report("%s: PayloadLength %d, payload %d bytes (must match and be non-zero)", typ, pl, len(payload))
	}
	digest := sha256.Sum256(payload)
	if !bytes.Equal(digest[:], f[digestAt:payloadTypeAt]) {
		v.report("%s: PayloadDigest is not SHA-256 of the payload", typ)
	}
	id := wireUUID(f[idAt : idAt+16])
	if id.Version() != 4 || id.Variant() != uuid.RFC4122 {
		v.report("%s: MessageId %s is not a v4 UUID with swapped halves on the wire", typ, id)
	}
	seq := int64(binary.BigEndian.Uint64(f[seqAt:]))
	flags := binary.BigEndian.Uint64(f[flagsAt:])
	pt := binary.BigEndian.Uint32(f[payloadTypeAt:])
	switch typ {
	case "acknowledge":
		v.checkAck(seq, flags, pt, payload)
	case "input_stream_data":
		v.checkStream(id, seq, flags, pt, digest, payload)
	}
	return typ
}

func (v *validator) checkType(b []byte) string {
	name := bytes.TrimRight(b, " ")
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c == '_') {
			v.report("MessageType %q is not lower-case ASCII right-padded with spaces", b)
			break
		}
	}
	typ := string(name)
	if typ != "acknowledge" && typ != "input_stream_data" {
		v.report("client sent MessageType %q", typ)
	}
	return typ
}

func (v *validator) checkAck(seq int64, flags uint64, pt uint32, payload []byte) {
	if seq != 0 || flags != 3 || pt != 0 {
		v.report("acknowledge: seq %d flags %d payload type %d, want 0, 3, 0", seq, flags, pt)
	}
	var a struct {
		AcknowledgedMessageType           string `json:"AcknowledgedMessageType"`
		AcknowledgedMessageID             string `json:"AcknowledgedMessageId"`
		AcknowledgedMessageSequenceNumber int64  `json:"AcknowledgedMessageSequenceNumber"`
		IsSequentialMessage               bool   `json:"IsSequentialMessage"`
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		v.report("acknowledge payload: %v", err)
		return
	}
	if canon, _ := json.Marshal(a); !bytes.Equal(canon, payload) {
		v.report("acknowledge payload %s differs from the canonical key order/shape", payload)
	}
	if a.AcknowledgedMessageType != "output_stream_data" || !a.IsSequentialMessage {
		v.report("acknowledge for %q sequential=%v", a.AcknowledgedMessageType, a.IsSequentialMessage)
	}
	v.mu.Lock()
	want, ok := v.agentIDs[a.AcknowledgedMessageSequenceNumber]
	delete(v.agentIDs, a.AcknowledgedMessageSequenceNumber)
	v.mu.Unlock()
	if ok && want.String() != a.AcknowledgedMessageID {
		v.report("acknowledge for seq %d carries MessageId %s, the agent sent %s",
			a.AcknowledgedMessageSequenceNumber, a.AcknowledgedMessageID, want)
	}
}

func (v *validator) checkStream(id uuid.UUID, seq int64, flags uint64, pt uint32, digest [32]byte, payload []byte) {
	if flags != 0 {
		v.report("input_stream_data seq %d: Flags %d, want 0", seq, flags)
	}
	switch pt {
	case 1, 6:
	case 10:
		if len(payload) != 4 {
			v.report("flag seq %d: payload %d bytes, want 4", seq, len(payload))
		} else if f := binary.BigEndian.Uint32(payload); f != 1 && f != 2 {
			v.report("flag seq %d: value %d is not a client flag", seq, f)
		}
	default:
		v.report("input_stream_data seq %d: PayloadType %d", seq, pt)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.clientSeq) > maxRemembered { // bound memory on long sessions
		clear(v.clientSeq)
		clear(v.idSeq)
	}
	if old, ok := v.clientSeq[seq]; ok && old != digest {
		v.report("seq %d resent with a different payload", seq)
	}
	v.clientSeq[seq] = digest
	if s, ok := v.idSeq[id]; ok && s != seq {
		v.report("MessageId %s reused for seq %d and %d", id, s, seq)
	}
	v.idSeq[id] = seq
}
