package stripe

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"

	"github.com/rdsproxy/rdsproxy/internal/leakcheck"
)

// bombs returns zstd frames that expand to 32 MiB: one that declares its
// size in the frame header and one streamed with small windows, which does not.
func bombs(t *testing.T, codec *Codec) (declared, streamed []byte) {
	zeros := make([]byte, 32<<20)
	declared = codec.encode(nil, zeros)
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithWindowSize(64<<10), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(zeros)
	w.Close()
	return declared, buf.Bytes()
}

func TestProtocolErrors(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	codec := newCodec(t)
	declared, streamed := bombs(t, codec)
	if len(declared) > maxWire || len(streamed) > maxWire {
		t.Fatalf("bombs of %d and %d bytes do not fit a frame", len(declared), len(streamed))
	}
	oversized := make([]byte, headerLen)
	putHeader(oversized, 0, 0, maxWire+1)
	cases := []struct {
		name  string
		codec *Codec
		wire  [][]byte
		want  string
	}{
		{"oversized length", codec, [][]byte{oversized}, "exceeds"},
		{"compressed without codec", nil, [][]byte{rawFrame(0, flagCompressed, []byte("0123456789"))}, "no codec"},
		{"bomb declaring its size", codec, [][]byte{rawFrame(0, flagCompressed, declared)}, "bad compressed payload"},
		{"bomb streamed", codec, [][]byte{rawFrame(0, flagCompressed, streamed)}, "bad compressed payload"},
		{"garbage compressed", codec, [][]byte{rawFrame(0, flagCompressed, []byte("not zstd at all"))}, "bad compressed payload"},
		{"duplicate seq", nil, [][]byte{rawFrame(0, 0, []byte("a")), rawFrame(0, 0, []byte("b"))}, "duplicate or past seq 0"},
		{"duplicate held seq", nil, [][]byte{rawFrame(2, 0, []byte("a")), rawFrame(2, 0, []byte("b"))}, "duplicate or past seq 2"},
		{"empty data frame", nil, [][]byte{rawFrame(0, 0, nil)}, "empty data frame"},
		{"frame after END", nil, [][]byte{rawFrame(1, flagEnd, nil), rawFrame(2, 0, []byte("a"))}, "after END"},
		{"END before a held frame", nil, [][]byte{rawFrame(2, 0, []byte("a")), rawFrame(1, flagEnd, nil)}, "END frame 1 before frame 2"},
		{"unknown flags", nil, [][]byte{rawFrame(0, 0x80, []byte("a"))}, "unknown flags"},
		{"CREDIT with a seq", nil, [][]byte{rawFrame(5, flagCredit, make([]byte, creditLen))}, "CREDIT frame with seq 5"},
		{"CREDIT of 4 bytes", nil, [][]byte{rawFrame(0, flagCredit, make([]byte, 4))}, "CREDIT frame with flags 0x4 and 4 bytes"},
		{"CREDIT with END", nil, [][]byte{rawFrame(0, flagCredit|flagEnd, make([]byte, creditLen))}, "CREDIT frame with flags 0x6"},
		{"CREDIT for bytes never sent", nil, [][]byte{creditFrame(100)}, "credit for 100 bytes but only 0 sent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			near, far := net.Pipe()
			defer far.Close()
			c := New(near, Options{Codec: tc.codec})
			defer c.Close()
			go func() {
				for _, b := range tc.wire {
					if _, err := far.Write(b); err != nil {
						return
					}
				}
			}()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var err error
			for err == nil {
				_, err = c.Read(make([]byte, 1))
			}
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrStripeLost) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a protocol error saying %q", err, tc.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("allocated %d bytes to reject the frame", alloc)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, ErrStripeLost) {
				t.Errorf("Write after the protocol error: %v", err)
			}
		})
	}
}

func TestCompressorBackoff(t *testing.T) {
	var p compressor
	tries := 0
	for range 1000 {
		if p.try(1000) {
			tries++
			p.result(false)
		}
	}
	// 4 misses, then one try after each skip of 16, 32, 64, 128, 256, 256.
	if tries < 8 || tries > 12 {
		t.Fatalf("%d tries of 1000 incompressible chunks", tries)
	}
	if p.try(100) {
		t.Fatal("a chunk under 512 bytes was tried")
	}
	for p.skip > 0 {
		p.try(1000)
	}
	if !p.try(1000) {
		t.Fatal("no try after the skip")
	}
	p.result(true)
	for i := range 4 {
		if !p.try(1000) {
			t.Fatalf("try %d after a chunk shrank was skipped", i)
		}
		p.result(false)
	}
	if p.try(1000) || p.skip != firstSkip-1 {
		t.Fatalf("after a reset and 4 misses: skip %d, want %d", p.skip+1, firstSkip)
	}
}
