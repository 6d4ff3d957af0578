package ssmendpoint

import (
	"bytes"
	"testing"
)

// FuzzDecodeFrame: the agent's parser never reads outside the frame, and
// what it accepts re-encodes to a frame that parses to the same fields and
// payload. Seeds: every golden vector.
func FuzzDecodeFrame(f *testing.F) {
	v := loadVectorsFile(f)
	for _, vec := range v.Vectors {
		if b, err := hexBytes(vec.SerializedHex); err == nil {
			f.Add(b)
		}
	}
	f.Add(make([]byte, payloadStart))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if len(fr.payload) == 0 || len(fr.typ) > typeFieldLength {
			return
		}
		enc, err := fr.encode()
		if err != nil {
			t.Fatalf("re-encode of an accepted frame: %v", err)
		}
		back, err := decodeFrame(enc)
		if err != nil {
			t.Fatalf("decode of our own encoding: %v", err)
		}
		if back.typ != fr.typ || back.seq != fr.seq || back.flags != fr.flags || back.id != fr.id ||
			back.ptype != fr.ptype || back.created != fr.created || !bytes.Equal(back.payload, fr.payload) {
			t.Fatalf("round trip changed the frame: %+v → %+v", fr, back)
		}
	})
}
