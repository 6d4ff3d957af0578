package relay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// proxied sets up client ⇄ [a relay b] ⇄ upstream and runs the session.
func proxied(t *testing.T, opts Options, pendingToB, pendingToA []byte) (client, upstream net.Conn, sess *Session, done chan Result) {
	client, a := tcpPair(t)
	b, upstream := tcpPair(t)
	sess = New(a, b, opts)
	done = make(chan Result, 1)
	go func() { done <- sess.Run(pendingToB, pendingToA) }()
	return client, upstream, sess, done
}

// Bytes read while routing are delivered before anything else, and a
// client's EOF reaches the upstream as EOF (half-close), after which the
// upstream can still answer.
func TestPendingFirstAndHalfClose(t *testing.T) {
	for _, opts := range []Options{{}, {FrameToA: true}} {
		client, upstream, _, done := proxied(t, opts, []byte("startup;"), msg('Z', "I"))
		client.Write([]byte("query"))
		client.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(upstream)
		if string(got) != "startup;query" {
			t.Fatalf("upstream got %q", got)
		}
		upstream.Write(msg('T', "answer"))
		upstream.Close()
		back, _ := io.ReadAll(client)
		if want := append(msg('Z', "I"), msg('T', "answer")...); !bytes.Equal(back, want) {
			t.Fatalf("client got %q, want %q", back, want)
		}
		res := <-done
		if res.ToB != int64(len("startup;query")) || res.ToA != int64(len(back)) || res.Err != nil || res.EndedBy != SideA {
			t.Fatalf("result %+v; want the client's end (side a) to have ended it", res)
		}
	}
}

// The result says whose end of stream ended the session, and names
// neither side when a reset or Stop did.
func TestEndedBy(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(client, upstream net.Conn, sess *Session)
		want Side
	}{
		{"the client closes", func(client, upstream net.Conn, _ *Session) {
			client.Close()
			io.Copy(io.Discard, upstream) // as PostgreSQL after a Terminate: the client's end, then its own
			upstream.Close()
		}, SideA},
		{"the database closes", func(_, upstream net.Conn, _ *Session) { upstream.Close() }, SideB},
		{"the client resets", func(client, _ net.Conn, _ *Session) {
			client.(*net.TCPConn).SetLinger(0)
			client.Close()
		}, Neither},
		{"Stop", func(_, _ net.Conn, sess *Session) { sess.Stop(msg('E', "SFATAL\x00")) }, Neither},
	} {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		c.end(client, upstream, sess)
		if res := <-done; res.EndedBy != c.want {
			t.Errorf("%s: EndedBy %v, want %v (result %+v)", c.name, res.EndedBy, c.want, res)
		}
	}
}

// A reset on one side closes the other.
func TestResetClosesBoth(t *testing.T) {
	client, upstream, _, done := proxied(t, Options{}, nil, nil)
	client.(*net.TCPConn).SetLinger(0)
	client.Close()
	upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(upstream); err != nil {
		t.Fatalf("upstream not closed: %v", err)
	}
	<-done
}

// Stop writes the final message only between two backend messages.
func TestStopAtBoundary(t *testing.T) {
	final := msg('E', "bye")
	t.Run("idle session at a boundary gets the final message", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		upstream.Write(msg('Z', "I"))
		readN(t, client, 6)
		sess.Stop(final)
		rest, _ := io.ReadAll(client)
		if !bytes.Equal(rest, final) {
			t.Fatalf("client got %q after Stop, want %q", rest, final)
		}
		if res := <-done; !res.Stopped {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("mid-message session gets the message's end, then it", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		whole := msg('D', "a long data row")
		upstream.Write(whole[:3]) // inside the header
		readN(t, client, 3)
		sess.Stop(final)
		upstream.Write(whole[3:8])
		time.Sleep(10 * time.Millisecond) // a separate read, most of the time
		upstream.Write(slices.Concat(whole[8:], msg('D', "the next row, never sent")))
		rest, _ := io.ReadAll(client)
		if want := slices.Concat(whole[3:], final); !bytes.Equal(rest, want) {
			t.Fatalf("client got %q after Stop, want %q", rest, want)
		}
		<-done
	})
	// A second Stop (the drain, after a revocation) while the first waits
	// for the message's end changes nothing: the client hears why its
	// session ended first, as its audit line says.
	t.Run("a second Stop keeps the first one's final", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		whole := msg('D', "a long data row")
		upstream.Write(whole[:8])
		readN(t, client, 8)
		sess.Stop(final)
		sess.Stop(msg('E', "second"))
		upstream.Write(whole[8:])
		rest, _ := io.ReadAll(client)
		if want := slices.Concat(whole[8:], final); !bytes.Equal(rest, want) {
			t.Fatalf("client got %q after two Stops, want %q", rest, want)
		}
		<-done
	})
	t.Run("a message that does not end within the grace closes without it", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		sess.stopGrace = 50 * time.Millisecond
		whole := msg('D', "a long data row")
		upstream.Write(whole[:8])
		readN(t, client, 8)
		sess.Stop(final)
		rest, _ := io.ReadAll(client)
		if len(rest) != 0 {
			t.Fatalf("client got %q inside a message", rest)
		}
		<-done
	})
	t.Run("a streaming result ends with whole rows, then it", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		row := msg('D', strings.Repeat("r", 3000))
		go streamRows(upstream, row)
		readN(t, client, 100<<10)
		sess.Stop(final)
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, err := io.ReadAll(client)
		if err != nil {
			t.Fatal(err)
		}
		// What followed the first 100 KiB: the rest of a row, whole rows, final.
		cut := len(row) - (100<<10)%len(row)
		body := rest[cut : len(rest)-len(final)]
		if !bytes.Equal(rest[len(rest)-len(final):], final) || len(body)%len(row) != 0 ||
			!bytes.Equal(body, bytes.Repeat(row, len(body)/len(row))) {
			t.Fatalf("after Stop the client got %d bytes ending %q; want whole rows, then %q", len(rest), rest[max(0, len(rest)-20):], final)
		}
		<-done
	})
	// A slow reader gets what was already on its way, then final, over
	// TCP and over TLS (where a write that once timed out breaks the
	// connection for good). Before, the writes after Stop had a fixed
	// stopGrace, and such a session closed mid-row.
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("a slow reader gets what was on its way, then it (TLS %v)", secure), func(t *testing.T) {
			client, a := tcpPair(t)
			a.(*net.TCPConn).SetWriteBuffer(1 << 20) // over 2 MiB in flight: more than the reader takes in stopGrace
			if secure {
				client, a = tlsPair(t, client, a)
			}
			b, upstream := tcpPair(t)
			sess := New(a, b, Options{FrameToA: true})
			sess.stopGrace, sess.stopLimit = 200*time.Millisecond, time.Minute
			done := make(chan Result, 1)
			go func() { done <- sess.Run(nil, nil) }()
			row := msg('D', strings.Repeat("r", 3000))
			go streamRows(upstream, row)
			readN(t, client, 100<<10)
			time.Sleep(200 * time.Millisecond) // the socket buffers between fill up
			sess.Stop(final)
			var tail []byte
			buf := make([]byte, 8<<10)
			for { // about 800 KB/s: longer than stopGrace
				client.SetReadDeadline(time.Now().Add(30 * time.Second))
				n, err := client.Read(buf)
				tail = append(tail, buf[:n]...)
				tail = tail[max(0, len(tail)-len(final)):]
				if err != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !bytes.Equal(tail, final) {
				t.Fatalf("a slow reader's stream ended with %q, want %q", tail, final)
			}
			<-done
		})
	}
	t.Run("a client that does not read is closed at the limit", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		sess.stopLimit = 300 * time.Millisecond
		sess.stopGrace = time.Hour // the limit, not the grace, must end the wait
		row := msg('D', strings.Repeat("r", 3000))
		go streamRows(upstream, row)
		readN(t, client, 100<<10)
		time.Sleep(200 * time.Millisecond) // the socket buffers between fill up: the relay waits in a write
		sess.Stop(final)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the session still waits for a client that does not read, past the stop limit")
		}
	})
	t.Run("unframed session closes without it", func(t *testing.T) {
		client, upstream, sess, done := proxied(t, Options{}, nil, nil)
		upstream.Write(msg('Z', "I"))
		readN(t, client, 6)
		sess.Stop(final)
		if rest, _ := io.ReadAll(client); len(rest) != 0 {
			t.Fatalf("client got %q", rest)
		}
		<-done
	})
}

func TestFramer(t *testing.T) {
	stream := slices.Concat(msg('Z', "I"), msg('D', "row"), msg('c', ""), msg('C', "SELECT 1"))
	ends := map[int]bool{}
	for end := 0; end < len(stream); {
		end += 1 + int(binary.BigEndian.Uint32(stream[end+1:]))
		ends[end] = true
	}
	for size := 1; size <= len(stream); size++ { // every way to cut it in equal pieces
		var f framer
		for at := 0; at < len(stream); at += size {
			next := min(at+size, len(stream))
			f.feed(stream[at:next])
			if f.atBoundary() != ends[next] {
				t.Fatalf("pieces of %d, after %d bytes: boundary %v, want %v", size, next, f.atBoundary(), ends[next])
			}
		}
	}
	var f framer
	f.feed(stream[:len(stream)-1])
	if f.atBoundary() {
		t.Fatal("boundary claimed inside a message")
	}
	var bad framer
	bad.feed([]byte{'X', 0, 0, 0, 1})
	if bad.atBoundary() {
		t.Fatal("boundary claimed in a stream that is not PostgreSQL framing")
	}
}

func TestFramerMidRows(t *testing.T) {
	for _, c := range []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"rows", slices.Concat(msg('T', "x"), msg('D', "row"), msg('D', "row")), true},
		{"inside a row", slices.Concat(msg('T', "x"), msg('D', "row")[:6]), true},
		{"result ended", slices.Concat(msg('D', "row"), msg('C', "SELECT 1")), false},
		{"copy out", slices.Concat(msg('H', "x"), msg('d', "line")), true},
		{"copy out after a notice", slices.Concat(msg('H', "x"), msg('d', "a"), msg('N', "n"), msg('d', "b")), true},
		{"copy out ended", slices.Concat(msg('H', "x"), msg('d', "a"), msg('c', "")), false},
		{"copy out failed", slices.Concat(msg('H', "x"), msg('d', "a"), msg('E', "e"), msg('d', "b")), false},
		{"copy both", slices.Concat(msg('W', "x"), msg('d', "wal")), false},
		{"idle", msg('Z', "I"), false},
	} {
		var f framer
		f.feed(c.stream)
		if f.midRows() != c.want {
			t.Errorf("%s: midRows %v, want %v", c.name, f.midRows(), c.want)
		}
	}
}

// The framer keeps the start of an ErrorResponse or NoticeResponse that
// ends the stream, however the stream was cut, and nothing when another
// message follows.
func TestFramerLastWord(t *testing.T) {
	fatal := "SFATAL\x00VFATAL\x00C57P01\x00Mterminating connection due to administrator command\x00\x00"
	long := strings.Repeat("M", 200)
	for _, c := range []struct {
		name   string
		stream []byte
		want   []byte
	}{
		{"a FATAL last", slices.Concat(msg('Z', "I"), msg('E', fatal)), []byte(fatal[:LastWordLen])},
		{"a WARNING last (a crash)", slices.Concat(msg('Z', "I"), msg('N', "SWARNING\x00C57P02\x00\x00")), []byte("SWARNING\x00C57P02\x00\x00")},
		{"an error the session goes on after", slices.Concat(msg('E', fatal), msg('Z', "I")), nil},
		{"inside the error", slices.Concat(msg('Z', "I"), msg('E', fatal))[:30], nil},
		{"the second of two", slices.Concat(msg('E', long), msg('N', "n"), msg('E', "C57P05\x00\x00")), []byte("C57P05\x00\x00")},
		{"rows", slices.Concat(msg('E', "C1\x00\x00"), rows(300)), nil},
	} {
		for size := 1; size <= len(c.stream); size++ { // every way to cut it in equal pieces
			var f framer
			for at := 0; at < len(c.stream); at += size {
				f.feed(c.stream[at:min(at+size, len(c.stream))])
			}
			if got := f.lastWord(); !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
				t.Fatalf("%s, in pieces of %d: lastWord %#v, want %#v", c.name, size, got, c.want)
			}
		}
	}
}

// A session the database ends with an ErrorResponse (a FATAL, as
// pg_terminate_backend's) reports the start of it; one it ends without a
// word, or that Stop ends, reports none.
func TestLastWord(t *testing.T) {
	fatal := msg('E', "SFATAL\x00C57P01\x00\x00")
	for _, c := range []struct {
		name string
		end  func(client, upstream net.Conn, sess *Session)
		want []byte
	}{
		{"a FATAL, then the end", func(_, upstream net.Conn, _ *Session) {
			upstream.Write(slices.Concat(msg('Z', "I"), fatal))
			upstream.Close()
		}, fatal[headerLen:]},
		{"a FATAL, then a reset", func(_, upstream net.Conn, _ *Session) {
			upstream.Write(slices.Concat(msg('Z', "I"), fatal))
			upstream.(*net.TCPConn).SetLinger(0)
			upstream.Close()
		}, fatal[headerLen:]},
		{"the end without a word", func(_, upstream net.Conn, _ *Session) {
			upstream.Write(msg('Z', "I"))
			upstream.Close()
		}, nil},
		{"a FATAL, then Stop", func(client, upstream net.Conn, sess *Session) {
			upstream.Write(fatal)
			readN(t, client, len(fatal))
			sess.Stop(msg('E', "Sbye\x00\x00"))
		}, nil},
	} {
		client, upstream, sess, done := proxied(t, Options{FrameToA: true}, nil, nil)
		c.end(client, upstream, sess)
		if res := <-done; !bytes.Equal(res.LastWord, c.want) || (res.LastWord == nil) != (c.want == nil) {
			t.Errorf("%s: LastWord %#v, want %#v", c.name, res.LastWord, c.want)
		}
	}
}

// A stream is in bulk once its rows have come n bytes without another
// message between them: a notice, or the end of a result and the start of
// the next (pipelined queries), starts the count over.
func TestFramerInBulk(t *testing.T) {
	const n = 1000
	for _, c := range []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"rows past n", slices.Concat(msg('T', "x"), rows(1200)), true},
		{"inside a row past n", slices.Concat(msg('T', "x"), rows(1200))[:1050], true},
		{"rows short of n", slices.Concat(msg('T', "x"), rows(800)), false},
		{"a notice between", slices.Concat(rows(600), msg('N', "n"), rows(600)), false},
		{"the next result", slices.Concat(rows(1200), msg('C', "SELECT 12"), msg('Z', "I"), msg('T', "x"), rows(200)), false},
		{"copy out past n", slices.Concat(msg('H', "x"), copyData(1200)), true},
		{"copy both", slices.Concat(msg('W', "x"), copyData(1200)), false},
		{"result ended", slices.Concat(rows(1200), msg('C', "SELECT 12")), false},
		{"the start of one large row", slices.Concat(msg('T', "x"), msg('D', strings.Repeat("v", 5000)))[:600], false},
		{"one large row past n", slices.Concat(msg('T', "x"), msg('D', strings.Repeat("v", 5000)))[:1200], true},
	} {
		var f framer
		f.feed(c.stream)
		if f.inBulk(n) != c.want {
			t.Errorf("%s: inBulk %v, want %v", c.name, f.inBulk(n), c.want)
		}
	}
}

// rows returns DataRows of 100 bytes, about n bytes of them.
func rows(n int) []byte { return messages('D', n) }

// copyData returns CopyData messages of 100 bytes, about n bytes of them.
func copyData(n int) []byte { return messages('d', n) }

func messages(typ byte, n int) []byte {
	var out []byte
	for len(out)+100 <= n {
		out = append(out, msg(typ, strings.Repeat("x", 95))...)
	}
	return out
}

// BenchmarkFramer follows a COPY out: rows of 100 bytes in 64 KiB writes.
func BenchmarkFramer(b *testing.B) {
	var stream []byte
	for len(stream)+100 <= 64<<10 {
		stream = append(stream, msg('d', strings.Repeat("x", 95))...)
	}
	b.SetBytes(int64(len(stream)))
	var f framer
	for b.Loop() {
		f.feed(stream)
	}
	if !f.atBoundary() {
		b.Fatal("lost the framing")
	}
}

// streamRows writes row to upstream until a write fails: the database
// sends rows until the session closes.
func streamRows(upstream net.Conn, row []byte) {
	for {
		if _, err := upstream.Write(row); err != nil {
			return
		}
	}
}

func msg(typ byte, body string) []byte {
	out := binary.BigEndian.AppendUint32([]byte{typ}, uint32(4+len(body)))
	return append(out, body...)
}

func readN(t *testing.T, c net.Conn, n int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
}

// bufferedConn is an upstream whose whole stream has already arrived:
// Read and ReadBuffered both take from it without blocking, then EOF.
type bufferedConn struct {
	net.Conn
	data *bytes.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error)         { return c.data.Read(p) }
func (c *bufferedConn) ReadBuffered(p []byte) (int, error) { return c.data.Read(p) }

// writeCounter counts the writes that reach a connection.
type writeCounter struct {
	net.Conn
	writes int
}

func (c *writeCounter) Write(p []byte) (int, error) { c.writes++; return c.Conn.Write(p) }

// From a BufferedReader, what has already arrived goes to the client in
// as few writes as the coalescing buffer allows, whole and in order, and
// the end of the stream still half-closes the client.
func TestCoalescesWhatIsBuffered(t *testing.T) {
	var stream []byte
	for i := range 100 { // 100 DataRows of 1 KiB: 100 KiB, two coalesced writes
		stream = append(stream, msg('D', string(bytes.Repeat([]byte{byte('a' + i%26)}, 1<<10-5)))...)
	}
	client, a := tcpPair(t)
	_, idle := tcpPair(t)
	counted := &writeCounter{Conn: a}
	b := &bufferedConn{Conn: idle, data: bytes.NewReader(stream)}
	done := make(chan Result, 1)
	go func() { done <- New(counted, b, Options{FrameToA: true}).Run(nil, nil) }()
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("client got %d bytes (%v), want the %d-byte stream intact", len(got), err, len(stream))
	}
	client.Close()
	res := <-done
	if want := (len(stream) + coalesceSize - 1) / coalesceSize; counted.writes != want {
		t.Fatalf("%d writes for %d buffered bytes, want %d", counted.writes, len(stream), want)
	}
	if res.ToA != int64(len(stream)) {
		t.Fatalf("result counts %d bytes to the client, want %d", res.ToA, len(stream))
	}
}

// From a socket, bytes that have already arrived towards the upstream go
// on in as few writes as the coalescing buffer allows (a COPY in's
// CopyData), whole and in order, and the client's end half-closes it.
func TestCoalescesWhatTheSocketHolds(t *testing.T) {
	stream := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16) // 100 KiB
	client, a := tcpPair(t)
	upstream, b := tcpPair(t)
	if _, err := client.Write(stream); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	readN(t, a, 0)
	counted := &writeCounter{Conn: b}
	done := make(chan Result, 1)
	go func() { done <- New(a, counted, Options{}).Run(nil, nil) }()
	got, err := io.ReadAll(upstream)
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("upstream got %d bytes (%v), want the %d-byte stream intact", len(got), err, len(stream))
	}
	upstream.Close()
	res := <-done
	if want := (len(stream) + coalesceSize - 1) / coalesceSize; counted.writes > want+1 {
		t.Fatalf("%d writes for %d bytes already received, want about %d", counted.writes, len(stream), want)
	}
	if res.ToB != int64(len(stream)) {
		t.Fatalf("result counts %d bytes to the upstream, want %d", res.ToB, len(stream))
	}
}

// unspliced hides *net.TCPConn, so the relay copies in chunks.
type unspliced struct{ net.Conn }

// EndedToB learns how the client's stream ended: its last bytes as written
// upstream (whatever the chunks), pending bytes included, once the client
// has gone, whether it closed or reset, and also between two TCP
// connections, which the copy would otherwise splice unseen.
func TestEndedToBTail(t *testing.T) {
	terminate := []byte{'X', 0, 0, 0, 4}
	for _, tc := range []struct {
		name    string
		pending string
		writes  []string
		reset   bool
		bothTCP bool
		want    string
	}{
		{name: "terminate", pending: "startup", writes: []string{"Q...", string(terminate)}, want: string(terminate)},
		{name: "small writes", writes: []string{"abcdef", "g", "hi"}, want: "efghi"},
		{name: "pending only", pending: "ab", want: "ab"},
		{name: "nothing", want: ""},
		{name: "reset mid-query", pending: "startup", writes: []string{"SELECT pg_sleep(60)"}, reset: true, want: "p(60)"},
		{name: "both TCP", writes: []string{"abcdef", string(terminate)}, bothTCP: true, want: string(terminate)},
		{name: "both TCP, reset", writes: []string{"abcdef"}, bothTCP: true, reset: true, want: "bcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, a := tcpPair(t)
			b, upstream := tcpPair(t)
			if !tc.bothTCP {
				b = unspliced{b}
			}
			ended := make(chan []byte, 1)
			sess := New(a, b, Options{EndedToB: func(tail []byte, _ bool) { ended <- bytes.Clone(tail) }})
			done := make(chan Result, 1)
			go func() { done <- sess.Run([]byte(tc.pending), nil) }()
			for _, w := range tc.writes {
				client.Write([]byte(w))
				time.Sleep(5 * time.Millisecond) // separate reads, most of the time
			}
			upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
			want := tc.pending + strings.Join(tc.writes, "")
			got := make([]byte, len(want))
			if _, err := io.ReadFull(upstream, got); err != nil || string(got) != want {
				t.Fatalf("upstream got %q (%v), want %q", got, err, want)
			}
			if tc.reset {
				client.(*net.TCPConn).SetLinger(0)
				client.Close()
			} else {
				client.(*net.TCPConn).CloseWrite()
			}
			tail := <-ended
			if string(tail) != tc.want {
				t.Fatalf("tail %q, want %q", tail, tc.want)
			}
			upstream.Close()
			<-done
		})
	}
}

// The tail is the stream's last TailLen bytes however the stream was cut.
func TestTailAcrossChunks(t *testing.T) {
	stream := []byte("SELECT 1;\x00Q\x00\x00\x00\x04X\x00\x00\x00\x04")
	for _, cuts := range [][]int{{}, {len(stream) - 4}, {len(stream) - 5}, {len(stream) - 1}, {3, 7, 12, 14, 15, 16, 17}} {
		var tl tail
		prev := 0
		for _, c := range append(cuts, len(stream)) {
			tl.add(stream[prev:c])
			prev = c
		}
		if got := tl.bytes(); !bytes.Equal(got, stream[len(stream)-TailLen:]) {
			t.Errorf("cut at %v: tail %q", cuts, got)
		}
	}
}

// Stop ends the client's stream too: EndedToB hears its tail every time,
// whether a's read ended with Stop's deadline or with the close of a that
// follows the final message (a race the real binary's drain lost, so no
// cancel reached the statement still running). It also hears whether the
// upstream was idle: it had answered the query with ReadyForQuery, so a
// cancel would be for nothing (a drain of 1000 idle sessions would dial
// 1000 of them).
func TestEndedToBAfterStop(t *testing.T) {
	type end struct {
		tail []byte
		idle bool
	}
	for i := range 50 {
		answered := i%2 == 1
		client, a := tcpPair(t)
		b, upstream := tcpPair(t)
		ended := make(chan end, 1)
		sess := New(a, unspliced{b}, Options{FrameToA: true, EndedToB: func(tail []byte, idle bool) { ended <- end{bytes.Clone(tail), idle} }})
		done := make(chan Result, 1)
		go func() { done <- sess.Run(nil, nil) }()
		client.Write(msg('Q', "SELECT pg_sleep(30)\x00"))
		readN(t, upstream, 25)
		if answered {
			upstream.Write(slices.Concat(msg('C', "SELECT 1\x00"), msg('Z', "I")))
			readN(t, client, 20)
		}
		sess.Stop(msg('E', "bye"))
		if res := <-done; !res.Stopped {
			t.Fatalf("run %d: result %+v", i, res)
		}
		select {
		case e := <-ended:
			if string(e.tail) != "(30)\x00" || e.idle != answered {
				t.Fatalf("run %d: tail %q, idle %v; want idle %v", i, e.tail, e.idle, answered)
			}
		default:
			t.Fatalf("run %d: EndedToB not called after Stop", i)
		}
		client.Close()
		upstream.Close()
	}
}

// A client that sends a query after the upstream's ReadyForQuery makes
// the upstream busy again: a client that vanishes then is not idle.
func TestEndedToBIdleOnlyUntilTheNextQuery(t *testing.T) {
	client, a := tcpPair(t)
	b, upstream := tcpPair(t)
	ended := make(chan bool, 1)
	sess := New(a, unspliced{b}, Options{FrameToA: true, EndedToB: func(_ []byte, idle bool) { ended <- idle }})
	done := make(chan Result, 1)
	go func() { done <- sess.Run(nil, nil) }()
	client.Write(msg('Q', "SELECT 1\x00"))
	readN(t, upstream, 14)
	upstream.Write(slices.Concat(msg('C', "SELECT 1\x00"), msg('Z', "I")))
	readN(t, client, 20)
	client.Write(msg('Q', "SELECT pg_sleep(30)\x00"))
	readN(t, upstream, 25)
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // vanishes mid-statement
	if idle := <-ended; idle {
		t.Fatal("EndedToB says idle while the second query runs")
	}
	upstream.Close()
	<-done
}

// When the upstream ends the session first, the client's stream did not
// end, so EndedToB is not called: the owner must not take the session's
// close of a for the client's end.
func TestEndedToBNotWhenUpstreamEndsFirst(t *testing.T) {
	client, a := tcpPair(t)
	b, upstream := tcpPair(t)
	called := make(chan []byte, 1)
	sess := New(a, unspliced{b}, Options{EndedToB: func(tail []byte, _ bool) { called <- bytes.Clone(tail) }})
	done := make(chan Result, 1)
	go func() { done <- sess.Run(nil, nil) }()
	client.Write([]byte("S\x00\x00\x00\x04"))
	upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(upstream, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	upstream.Close() // the database goes first; the client is still there
	<-done
	select {
	case tail := <-called:
		t.Fatalf("EndedToB(%q) when the upstream ended the session", tail)
	default:
	}
	client.Close()
}

// When reading b fails (the tunnel dropped: a reset, not an EOF), a
// framed session tells a why with Options.Lost's message, at a message
// boundary; not after b's own ErrorResponse, not inside a message, and
// not when b ends cleanly.
func TestLostUpstreamSaysWhy(t *testing.T) {
	lost := func(err error) []byte { return msg('E', "lost: "+err.Error()) }
	for _, tt := range []struct {
		name   string
		sent   []byte // by b before it goes
		reset  bool   // b resets rather than closes
		saysIt bool
	}{
		{"reset at a boundary", msg('Z', "I"), true, true},
		{"reset inside a message", msg('D', "a long data row")[:8], true, false},
		{"reset after b's own error", msg('E', "FATAL from b"), true, false},
		{"clean close", msg('Z', "I"), false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, upstream, _, done := proxied(t, Options{FrameToA: true, Lost: lost}, nil, nil)
			upstream.Write(tt.sent)
			readN(t, client, len(tt.sent))
			if tt.reset {
				upstream.(*net.TCPConn).SetLinger(0)
			}
			upstream.Close()
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, _ := io.ReadAll(client)
			said := bytes.HasPrefix(rest, []byte{'E'}) && bytes.Contains(rest, []byte("lost: "))
			if said != tt.saysIt || !said && len(rest) != 0 {
				t.Fatalf("client got %q after b went; want the lost message: %v", rest, tt.saysIt)
			}
			<-done
		})
	}
}

// After Stop, the owner's final message is the one a hears, even when b
// then fails: Options.Lost's is not written as well.
func TestLostNotAfterStop(t *testing.T) {
	lost := func(err error) []byte { return msg('E', "lost") }
	client, upstream, sess, done := proxied(t, Options{FrameToA: true, Lost: lost}, nil, nil)
	upstream.Write(msg('Z', "I"))
	readN(t, client, 6)
	final := msg('E', "bye")
	sess.Stop(final)
	upstream.(*net.TCPConn).SetLinger(0)
	upstream.Close()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, _ := io.ReadAll(client); !bytes.Equal(rest, final) {
		t.Fatalf("client got %q after Stop and b's reset, want only %q", rest, final)
	}
	<-done
}

// tlsPair wraps both ends of a TCP connection in TLS, with a certificate
// made for the test.
func tlsPair(t *testing.T, client, server net.Conn) (net.Conn, net.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	tc := tls.Client(client, &tls.Config{RootCAs: roots, ServerName: "relay.test", MinVersion: tls.VersionTLS13})
	ts := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13})
	errs := make(chan error, 1)
	go func() { errs <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return tc, ts
}

// Half-closing toward a peer that has already gone is not a failure: the
// session ended as the peer wanted. (PostgreSQL closes once it has read
// Terminate; the close_notify that follows draws a reset, and the
// half-close then finds the socket no longer connected. Such sessions were
// audited aborted.)
func TestHalfCloseAfterThePeerWent(t *testing.T) {
	c, peer := tcpPair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("the peer's reset did not arrive: %v", err)
	}
	if err := closeWrite(c); err != nil {
		t.Fatalf("half-close after the peer went: %v", err)
	}
}
