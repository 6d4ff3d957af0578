package stripe

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkStripes copies 4 MiB per iteration one way over K loopback TCP
// stripes; -benchtime=1x keeps a run short.
func BenchmarkStripes(b *testing.B) {
	const size = 4 << 20
	codec := newCodec(b)
	for _, k := range []int{1, 2, 4} {
		for _, kind := range []string{"text", "random"} {
			data := textData(size)
			if kind == "random" {
				data = randomData(size, 9)
			}
			b.Run(fmt.Sprintf("K=%d/%s", k, kind), func(b *testing.B) {
				a, z := tcpPairs(b, k)
				opts := Options{Codec: codec, Compress: true}
				ca, cz := newPair(b, a, z, opts, opts)
				done := make(chan error)
				go func() {
					_, err := io.CopyN(io.Discard, cz, int64(size)*int64(b.N))
					done <- err
				}()
				b.SetBytes(size)
				b.ResetTimer()
				for range b.N {
					if _, err := ca.Write(data); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
