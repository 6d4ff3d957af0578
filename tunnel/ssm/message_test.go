package ssm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/uuid"
)

func TestMessageGoldenVectors(t *testing.T) {
	for _, v := range loadVectors(t).Vectors {
		t.Run(v.Name, func(t *testing.T) {
			wire := mustHex(t, v.SerializedHex)
			m, err := Decode(wire)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			p := v.ParsedBack
			got := []any{m.HeaderLength, m.MessageType, m.SchemaVersion, m.CreatedDate,
				m.SequenceNumber, m.Flags, m.MessageID.String(), hex.EncodeToString(m.PayloadDigest[:]),
				m.PayloadType, m.PayloadLength, hex.EncodeToString(m.Payload)}
			want := []any{p.HeaderLength, p.MessageType, p.SchemaVersion, p.CreatedDate,
				p.SequenceNumber, p.Flags, p.MessageID, p.DigestHex,
				p.PayloadType, p.PayloadLength, p.PayloadHex}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("parsed field %d = %v, want %v", i, got[i], want[i])
				}
			}
			reenc, err := m.Encode(nil)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(reenc, wire) {
				t.Errorf("re-encoded\n%x\nwant\n%x", reenc, wire)
			}
			// Build from the input fields, as a sender would.
			f := v.Fields
			built := &Message{MessageType: f.MessageType, SchemaVersion: f.SchemaVersion,
				CreatedDate: f.CreatedDate, SequenceNumber: f.SequenceNumber, Flags: f.Flags,
				MessageID: uuid.MustParse(f.MessageID), PayloadType: f.PayloadType,
				Payload: mustHex(t, f.PayloadHex)}
			prefix := []byte("keep")
			out, err := built.Encode(prefix)
			if err != nil {
				t.Fatalf("encode fields: %v", err)
			}
			if !bytes.Equal(out[:4], []byte("keep")) || !bytes.Equal(out[4:], wire) {
				t.Errorf("encoded from fields\n%x\nwant\n%x", out[4:], wire)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := mustHex(t, loadVectors(t).Vectors[0].SerializedHex)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrShortFrame},
		{"119 bytes", good[:119], ErrShortFrame},
		{"header length 0", mutate(func(b []byte) []byte { b[3] = 0; return b }), ErrHeaderLength},
		{"header length 117", mutate(func(b []byte) []byte { b[3] = 117; return b }), ErrHeaderLength},
		{"digest", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrDigestMismatch},
		{"truncated payload", good[:len(good)-1], ErrPayloadLength},
		{"zero date", mutate(func(b []byte) []byte { clear(b[offCreatedDate:offSequenceNumber]); return b }), ErrZeroCreatedDate},
		{"blank type", mutate(func(b []byte) []byte {
			copy(b[offMessageType:offSchemaVersion], bytes.Repeat([]byte(" "), 32))
			return b
		}), ErrMessageType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodePublicationSkipsValidation(t *testing.T) {
	frame := make([]byte, offPayload)
	copy(frame[offMessageType:], TypePausePublication)
	m, err := Decode(frame)
	if err != nil {
		t.Fatalf("Decode zero-header pause_publication: %v", err)
	}
	if m.MessageType != TypePausePublication {
		t.Fatalf("type %q", m.MessageType)
	}
}

func TestEncodeRejectsEmptyPayload(t *testing.T) {
	m := &Message{MessageType: TypeInputStreamData, CreatedDate: 1}
	if _, err := m.Encode(nil); !errors.Is(err, ErrEmptyPayload) {
		t.Fatalf("Encode empty payload error = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzDecode (one per golden vector).
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			return
		}
		if len(m.Payload) == 0 {
			return
		}
		enc, err := m.Encode(nil)
		if err != nil {
			return // e.g. over-long type from an unvalidated publication frame
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode of re-encoded frame: %v", err)
		}
		if m2.MessageType != m.MessageType || m2.SequenceNumber != m.SequenceNumber ||
			m2.MessageID != m.MessageID || !bytes.Equal(m2.Payload, m.Payload) {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, m2)
		}
	})
}
