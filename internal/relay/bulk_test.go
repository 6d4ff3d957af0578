package relay

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"
)

// Results past bulkAfter, in every shape the hold and its pause meet,
// reach the client byte for byte while the database writes them in
// pieces of random size with random gaps (so that holds run out, fill,
// and pause with the socket empty or not).
func TestBulkStreamArrivesIntact(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		stream := bulkScript(r)
		client, upstream, _, done := proxied(t, Options{FrameToA: true}, nil, nil)
		go func() {
			writeInPieces(r, upstream, stream)
			upstream.(*net.TCPConn).CloseWrite()
		}()
		client.SetReadDeadline(time.Now().Add(60 * time.Second))
		got, err := io.ReadAll(client)
		if err != nil || !bytes.Equal(got, stream) {
			t.Fatalf("seed %d: the client got %d of %d bytes (%v), the same up to byte %d", seed, len(got), len(stream), err, samePrefix(got, stream))
		}
		client.Close()
		if res := <-done; res.Err != nil || res.ToA != int64(len(stream)) {
			t.Fatalf("seed %d: session ended with %+v; want %d bytes to the client and no error", seed, res, len(stream))
		}
	}
}

// A Stop that lands anywhere in a bulk stream, a pause included, ends it
// with whole rows and then the final message.
func TestBulkStreamStops(t *testing.T) {
	final := msg('E', "SFATAL\x00C57P01\x00Mshutting down\x00")
	row := msg('D', string(bytes.Repeat([]byte{'r'}, 3001)))
	head := msg('T', "x")
	for i := range 12 {
		r, at := rand.New(rand.NewPCG(uint64(i), 1)), rand.New(rand.NewPCG(uint64(i), 2))
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		go func() {
			if _, err := upstream.Write(head); err == nil {
				writeInPieces(r, upstream, bytes.Repeat(row, 4000)) // ends when the session closes it
			}
		}()
		n := bulkAfter + at.IntN(bulkAfter) // read before the Stop
		readN(t, client, n)
		time.Sleep(time.Duration(at.IntN(1000)) * time.Microsecond)
		sess.Stop(final)
		client.SetReadDeadline(time.Now().Add(20 * time.Second))
		rest, err := io.ReadAll(client)
		if err != nil {
			t.Fatalf("run %d: after Stop: %v", i, err)
		}
		rowsSent := n + len(rest) - len(head) - len(final)
		if !bytes.HasSuffix(rest, final) || rowsSent < 0 || rowsSent%len(row) != 0 {
			t.Fatalf("run %d: %d bytes before the final message %v; want a header and whole rows of %d bytes, then the final message", i, n+len(rest)-len(final), bytes.HasSuffix(rest, final), len(row))
		}
		want := slices.Concat(head, bytes.Repeat(row, rowsSent/len(row)))
		if !bytes.Equal(rest[:len(rest)-len(final)], want[n:]) {
			t.Fatalf("run %d: the rows after Stop are not the rows sent", i)
		}
		if res := <-done; !res.Stopped {
			t.Fatalf("run %d: session ended with %+v; want it stopped", i, res)
		}
		upstream.Close()
	}
}

// bulkScript is a database's side of several queries: a large result; one
// with a notice in the middle; a COPY out that fails past bulkAfter; two
// pipelined results; a COPY out that ends; replication's COPY BOTH.
func bulkScript(r *rand.Rand) []byte {
	result := func(n int) []byte {
		return slices.Concat(msg('T', "x"), randomRows(r, 'D', n), msg('C', "SELECT"), msg('Z', "I"))
	}
	return slices.Concat(
		result(5<<18),
		msg('T', "x"), randomRows(r, 'D', 5<<18), msg('N', "SNOTICE\x00"), randomRows(r, 'D', 1<<18), msg('C', "SELECT"), msg('Z', "I"),
		msg('H', "\x00\x00\x00"), randomRows(r, 'd', 5<<18), msg('E', "SERROR\x00"), msg('Z', "I"),
		result(5<<18), result(5<<18),
		msg('H', "\x00\x00\x00"), randomRows(r, 'd', 5<<18), msg('c', ""), msg('C', "COPY"), msg('Z', "I"),
		msg('W', "\x00\x00\x00"), randomRows(r, 'd', 1<<20),
	)
}

// randomRows returns messages of typ of 25 to 6,000 bytes, n bytes or a
// little more of them, each filled with one letter.
func randomRows(r *rand.Rand, typ byte, n int) []byte {
	var out []byte
	for len(out) < n {
		body := bytes.Repeat([]byte{byte('a' + r.IntN(26))}, 20+r.IntN(5980))
		out = append(out, msg(typ, string(body))...)
	}
	return out
}

// writeInPieces writes p to c in pieces of 1 byte to 24 KiB, after one
// in six a gap of up to 3 ms, until p ends or a write fails.
func writeInPieces(r *rand.Rand, c net.Conn, p []byte) {
	for len(p) > 0 {
		k := min(len(p), 1+r.IntN(24<<10))
		if _, err := c.Write(p[:k]); err != nil {
			return
		}
		p = p[k:]
		if r.IntN(6) == 0 {
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		}
	}
}

// samePrefix is how many bytes a and b have in common from the start.
func samePrefix(a, b []byte) int {
	i := 0
	for i < min(len(a), len(b)) && a[i] == b[i] {
		i++
	}
	return i
}
