package stripe

import (
	"bytes"
	"testing"
)

func FuzzReadFrame(f *testing.F) {
	codec, err := NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	defer codec.Close()
	f.Add(rawFrame(0, 0, []byte("hello")))
	f.Add(append(rawFrame(7, 0, []byte("a")), rawFrame(8, flagEnd, nil)...))
	f.Add(rawFrame(1, flagCompressed, codec.encode(nil, bytes.Repeat([]byte("abc"), 1000))))
	f.Add(rawFrame(2, flagCompressed, codec.encode(nil, make([]byte, maxPayload+1))))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff})
	f.Add(creditFrame(1 << 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var hdr [headerLen]byte
		for {
			fr, err := readFrame(r, codec, &hdr)
			if err != nil {
				return
			}
			if fr.credit {
				if fr.data != nil || fr.end || fr.seq != 0 || fr.wire != headerLen+creditLen {
					t.Fatalf("CREDIT frame: seq %d, %d bytes, end %v, wire %d", fr.seq, len(fr.data), fr.end, fr.wire)
				}
				continue
			}
			if len(fr.data) > maxPayload || fr.end != (len(fr.data) == 0) || fr.wire > headerLen+maxWire {
				t.Fatalf("frame %d: %d bytes, end %v, wire %d", fr.seq, len(fr.data), fr.end, fr.wire)
			}
			putBuf(fr.data)
		}
	})
}
