package stripe

// Why zstd and not lz4 (issue #12 asked to measure both). Measured with
// this benchmark on 32 KiB chunks (Options.MaxChunk's default, each chunk
// compressed on its own), 2026-12-02, AMD EPYC, 2 shared cores, with lz4
// from github.com/pierrec/lz4/v4 v4.1.33's block API added in a scratch copy:
//
//	input      codec          ratio  encode MB/s  decode MB/s
//	copy-x90   zstd (ours)     46.0         1098         2588
//	           lz4 fast        18.4         3443        15758
//	           lz4 HC level 9  18.6          407        12622
//	accounts   zstd (ours)     78.4         1501         3071
//	           lz4 fast        18.0         3260        16193
//	           lz4 HC level 9  18.2          397        16520
//	random     zstd (ours)     1.00         7527        18344
//	           lz4 fast        1.00         4931        37064
//	mixed      zstd (ours)     2.62          136          681
//	           lz4 fast        1.65          297         3638
//	           lz4 HC level 9  1.95           79         2973
//
// An SSM session carries about 0.6 MB/s, so what a stripe moves is that
// times the ratio, and every codec here is over 100 times faster than the
// link on one core. zstd's ratio is 2.5-4.3
// times lz4's on COPY text and 1.3-1.6 times on mixed rows, so it moves that
// much more per session; lz4's speed buys nothing here. Random input costs
// neither much, and buildFrame stops trying it anyway. So the codec stays
// zstd, and go.mod does not carry lz4 for a benchmark.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// blockCodec compresses one chunk at a time, as buildFrame does.
type blockCodec struct {
	name   string
	encode func(dst, src []byte) []byte  // appends src compressed to dst
	decode func(src []byte) (int, error) // decompresses src and returns its length
}

// benchCodecs are the codecs BenchmarkCodec compares. The lz4 comparison
// was run by adding lz4 entries here in a scratch copy of this package (see
// the comment at the top), so go.mod does not carry lz4 for a benchmark.
func benchCodecs(c *Codec) []blockCodec {
	return []blockCodec{zstdCodec(c)}
}

// zstdCodec is the transport's own codec: NewCodec's settings, and decode
// into a pooled buffer as the stripe reader does.
func zstdCodec(c *Codec) blockCodec {
	return blockCodec{
		name:   "zstd",
		encode: c.encode,
		decode: func(src []byte) (int, error) {
			out, err := c.decode(src)
			if err != nil {
				return 0, err
			}
			putBuf(out)
			return len(out), nil
		},
	}
}

// BenchmarkCodec compresses and decompresses 1 MiB of each input in chunks
// of Options.MaxChunk's default, each on its own as a frame is. It reports
// the ratio (input bytes over compressed bytes) and, through SetBytes, the
// MB/s of input bytes. Run: go test -run x -bench Codec -benchtime 20x.
func BenchmarkCodec(b *testing.B) {
	const size = 1 << 20
	chunk := Options{}.withDefaults().MaxChunk
	codec := newCodec(b)
	for _, in := range codecInputs(size) {
		chunks := splitChunks(in.data, chunk)
		for _, bc := range benchCodecs(codec) {
			packed, ratio := encodeChunks(bc, chunks)
			b.Run(in.name+"/"+bc.name+"/encode", func(b *testing.B) {
				benchEncode(b, bc, chunks, ratio)
			})
			b.Run(in.name+"/"+bc.name+"/decode", func(b *testing.B) {
				benchDecode(b, bc, packed, len(in.data), ratio)
			})
		}
	}
}

func benchEncode(b *testing.B, bc blockCodec, chunks [][]byte, ratio float64) {
	dst := make([]byte, 0, 2*maxWire)
	b.SetBytes(int64(totalLen(chunks)))
	for b.Loop() {
		for _, c := range chunks {
			dst = bc.encode(dst[:0], c)
		}
	}
	b.ReportMetric(ratio, "ratio") // after the loop: b.Loop's timer reset drops metrics
}

func benchDecode(b *testing.B, bc blockCodec, packed [][]byte, size int, ratio float64) {
	b.SetBytes(int64(size))
	for b.Loop() {
		for _, p := range packed {
			if _, err := bc.decode(p); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(ratio, "ratio")
}

// encodeChunks compresses every chunk once, checks that each decodes to
// its length, and returns the compressed chunks and the overall ratio.
func encodeChunks(bc blockCodec, chunks [][]byte) ([][]byte, float64) {
	packed := make([][]byte, len(chunks))
	for i, c := range chunks {
		packed[i] = bc.encode(nil, c)
		if n, err := bc.decode(packed[i]); err != nil || n != len(c) {
			panic(fmt.Sprintf("%s: chunk %d decodes to %d bytes (%v), want %d", bc.name, i, n, err, len(c)))
		}
	}
	return packed, float64(totalLen(chunks)) / float64(totalLen(packed))
}

type codecInput struct {
	name string
	data []byte
}

// codecInputs are what the transport carries: the bench's COPY rows,
// pgbench_accounts as COPY text, incompressible bytes (what pg_dump -Fc
// writes: its table data is already zlib-compressed), and rows of mixed
// words, numbers and timestamps as a typical table's COPY.
func codecInputs(size int) []codecInput {
	return []codecInput{
		{"copy-x90", benchRows(size, func(i int) string { return fmt.Sprintf("%d\t%s\n", i, strings.Repeat("x", 90)) })},
		{"accounts", benchRows(size, accountsRow)},
		{"random", randomData(size, 7)},
		{"mixed", benchRows(size, mixedRow(rand.New(rand.NewPCG(3, 5))))},
	}
}

// benchRows joins rows 1, 2, ... until size bytes.
func benchRows(size int, row func(i int) string) []byte {
	var sb strings.Builder
	for i := 1; sb.Len() < size; i++ {
		sb.WriteString(row(i))
	}
	return []byte(sb.String()[:size])
}

// accountsRow is a pgbench_accounts row as COPY text: 100000 accounts a branch.
func accountsRow(aid int) string {
	return fmt.Sprintf("%d\t%d\t0\t%s\n", aid, (aid-1)/100000+1, strings.Repeat(" ", 84))
}

// mixedRow returns rows of an orders-like table: random customer names,
// amounts, timestamps and statuses.
func mixedRow(r *rand.Rand) func(int) string {
	words := strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike " +
		"november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu")
	states := []string{"pending", "paid", "shipped", "delivered", "refunded"}
	return func(i int) string {
		return fmt.Sprintf("%d\t%s %s\t%s.%d@example.com\t%d.%02d\t2026-%02d-%02d %02d:%02d:%02d.%06d+00\t%s\t%x\n",
			i, words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(10000),
			r.IntN(100000), r.IntN(100), 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000000),
			states[r.IntN(len(states))], r.Uint32())
	}
}

func splitChunks(data []byte, n int) [][]byte {
	var chunks [][]byte
	for len(data) > 0 {
		k := min(n, len(data))
		chunks = append(chunks, data[:k])
		data = data[k:]
	}
	return chunks
}

func totalLen(bs [][]byte) int {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	return n
}
