package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// scriptConn is an upstream b that returns scripted chunks, then end.
// Before chunk i is returned, hook(i) runs (CancelSent, Stop...).
type scriptConn struct {
	net.Conn
	mu       sync.Mutex
	chunks   [][]byte
	i        int
	cur      []byte
	end      error
	hook     func(i int)
	deadline time.Time
}

func (c *scriptConn) advance() bool {
	for len(c.cur) == 0 {
		if c.i >= len(c.chunks) {
			return false
		}
		if c.hook != nil {
			c.hook(c.i)
		}
		c.cur = c.chunks[c.i]
		c.i++
	}
	return true
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	if !dl.IsZero() && time.Now().After(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	if !c.advance() {
		return 0, c.end
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

// ReadBuffered gives the rest of the current chunk only.
func (c *scriptConn) ReadBuffered(p []byte) (int, error) {
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

func (c *scriptConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}
func (c *scriptConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }
func (c *scriptConn) Close() error                  { return nil }

// sinkConn is a client a that records what it is written.
type sinkConn struct {
	net.Conn
	mu     sync.Mutex
	got    bytes.Buffer
	failAt int // fail writes once got holds this many bytes (0: never)
	writes int
}

func (c *sinkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.failAt > 0 && c.got.Len()+len(p) > c.failAt {
		k := c.failAt - c.got.Len()
		c.got.Write(p[:k])
		return k, errors.New("sink: write failed")
	}
	return c.got.Write(p)
}
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) CloseWrite() error                { return nil }
func (c *sinkConn) Close() error                     { return nil }

type pmsg struct {
	off, end int
	typ      byte
	copyOut  bool // a COPY out was on when it began
}

func parse(t *testing.T, s []byte) []pmsg {
	var out []pmsg
	var f framer
	for off := 0; off < len(s); {
		if len(s)-off < 5 {
			t.Fatalf("bad script")
		}
		l := int(binary.BigEndian.Uint32(s[off+1:]))
		out = append(out, pmsg{off, off + 1 + l, s[off], f.copyOut})
		f.feed(s[off : off+1+l])
		off += 1 + l
	}
	return out
}

// checkOut reports why out is not stream with runs of droppable messages,
// after cancelAt, each right before an ERROR 57014, removed.
func checkOut(t *testing.T, stream, out []byte, cancelAt int) error {
	if bytes.Equal(stream, out) {
		return nil
	}
	ms := parse(t, stream)
	droppable := func(m pmsg) bool { return m.typ == 'D' || m.typ == 'N' || m.typ == 'd' && m.copyOut }
	isCancel := func(i int) bool {
		return i < len(ms) && ms[i].typ == 'E' && answersCancel(stream[ms[i].off+5:ms[i].end])
	}
	type key struct{ i, o int }
	memo := map[key]bool{}
	var ok func(i, o int) bool // messages from i on give out from o on
	ok = func(i, o int) bool {
		if i == len(ms) {
			return o == len(out)
		}
		k := key{i, o}
		if v, seen := memo[k]; seen {
			return v
		}
		res := false
		m := ms[i]
		if bytes.HasPrefix(out[o:], stream[m.off:m.end]) && ok(i+1, o+m.end-m.off) {
			res = true
		} else if m.off >= cancelAt {
			for j := i; j < len(ms) && droppable(ms[j]); j++ {
				if isCancel(j+1) && ok(j+1, o) {
					res = true
					break
				}
			}
		}
		memo[k] = res
		return res
	}
	if ok(0, 0) {
		return nil
	}
	return fmt.Errorf("out (%d bytes) is not the stream (%d bytes) with runs of rows before a cancel's error dropped; same up to %d", len(out), len(stream), samePrefix(stream, out))
}

var (
	fatalCancel  = msg('E', "SFATAL\x00VFATAL\x00C57014\x00Mx\x00")
	noticeCancel = msg('N', "SNOTICE\x00VNOTICE\x00C57014\x00Mx\x00")
	longSCancel  = msg('E', "S"+string(bytes.Repeat([]byte{'x'}, 60))+"\x00VERROR\x00C57014\x00M\x00")
)

func randomScript(r *rand.Rand) []byte {
	var out []byte
	n := 1 + r.IntN(30)
	inCopy := false
	for range n {
		switch k := r.IntN(20); {
		case k < 7:
			out = append(out, msg('D', string(bytes.Repeat([]byte{'r'}, r.IntN(40))))...)
		case k < 9:
			out = append(out, msg('N', "SNOTICE\x00VNOTICE\x0000000\x00Mhi\x00")...)
		case k < 11:
			out = append(out, canceled...)
		case k == 11:
			out = append(out, divByZero...)
		case k == 12:
			out = append(out, ready...)
		case k == 13:
			out = append(out, msg('C', "SELECT 1")...)
		case k == 14:
			if inCopy {
				out = append(out, msg('c', "")...)
			} else {
				out = append(out, msg('H', "\x00\x00\x00")...)
			}
			inCopy = !inCopy
		case k == 15:
			out = append(out, msg('d', string(bytes.Repeat([]byte{'c'}, r.IntN(40))))...)
		case k == 16:
			out = append(out, fatalCancel...)
		case k == 17:
			out = append(out, noticeCancel...)
		case k == 18:
			out = append(out, msg('W', "\x00\x00\x00")...)
		default:
			out = append(out, longSCancel...)
		}
	}
	return out
}

func cut(r *rand.Rand, s []byte) [][]byte {
	var out [][]byte
	for len(s) > 0 {
		k := 1 + r.IntN(min(len(s), 1+r.IntN(40)))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

// runScript runs toA on chunks after pending, with CancelSent before it
// starts: what follows pending may be set aside. It returns what the
// client got.
func runScript(pending []byte, chunks [][]byte, end error, budget *Budget) ([]byte, error) {
	b := &scriptConn{chunks: chunks, end: end}
	a := &sinkConn{}
	s := New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: budget})
	s.asideFor = time.Minute
	s.CancelSent()
	_, err := s.toA(pending)
	return a.got.Bytes(), err
}

// After a cancel at any byte of random streams (rows, notices, COPY out
// and COPY BOTH, the cancel's error, other errors, a FATAL or a NOTICE with
// 57014, an error whose code lies past LastWordLen) cut in random chunks,
// the client gets the stream with, at most, runs of rows and notices
// dropped right before a cancel's error; the budget is always given back.
func TestCancelRandomScripts(t *testing.T) {
	for seed := range uint64(4000) {
		r := rand.New(rand.NewPCG(seed, 50))
		pre := randomScript(r)
		post := randomScript(r)
		stream := slices.Concat(pre, post)
		// cancel at a random byte of the stream, given as pending
		at := r.IntN(len(stream) + 1)
		budget := NewBudget(64 << 20)
		out, err := runScript(stream[:at], cut(r, stream[at:]), io.EOF, budget)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if e := checkOut(t, stream, out, at); e != nil {
			t.Fatalf("seed %d: %v\nstream %q\nout    %q", seed, e, stream, out)
		}
		if budget.left.Load() != 64<<20 {
			t.Fatalf("seed %d: budget leak", seed)
		}
	}
}

// Every cut in three chunks of rows, a notice, the cancel's error and the
// next query's rows and error, with a cancel at the start, before the
// first cut or halfway to it, ending with an EOF or a read error: the same.
func TestCancelEveryCut(t *testing.T) {
	stream := slices.Concat(msg('D', "abc"), msg('N', "SNOTICE\x00VNOTICE\x00C00000\x00\x00"), msg('D', "x"), canceled, ready, msg('T', "y"), msg('D', "z"), canceled, ready)
	for _, e := range []error{io.EOF, errors.New("boom")} {
		for i := 0; i <= len(stream); i++ {
			for j := i; j <= len(stream); j++ {
				for _, p := range []int{0, i / 2, i} {
					budget := NewBudget(64 << 20)
					out, _ := runScript(stream[:p], [][]byte{stream[p:i], stream[i:j], stream[j:]}, e, budget)
					if err := checkOut(t, stream, out, p); err != nil {
						t.Fatalf("cut %d/%d/%d: %v", p, i, j, err)
					}
					if budget.left.Load() != 64<<20 {
						t.Fatal("leak")
					}
				}
			}
		}
	}
}

// Broken framing after a cancel (a length under 4, a huge one, empty
// messages) at every cut: no panic, and the bytes go through unchanged.
func TestCancelBrokenFraming(t *testing.T) {
	cases := [][]byte{
		slices.Concat(msg('D', "a"), []byte{'D', 0, 0, 0, 2}, canceled, ready),
		slices.Concat(msg('D', "a"), []byte{'E', 0, 0, 0, 0}, canceled, ready),
		slices.Concat(msg('D', "a"), []byte{'E', 0, 0, 0, 3, 'x'}, canceled),
		slices.Concat(msg('D', "a"), []byte{'D', 0xff, 0xff, 0xff, 0xff, 'x', 'y'}),
		slices.Concat(msg('D', "a"), []byte{'E', 0xff, 0xff, 0xff, 0xff, 'x', 'y'}),
		slices.Concat(msg('D', "a"), []byte{'N', 0, 0, 0, 4}, canceled),
		slices.Concat(msg('D', "a"), []byte{'E', 0, 0, 0, 4}, canceled),
	}
	for ci, stream := range cases {
		for i := 0; i <= len(stream); i++ {
			for j := i; j <= len(stream); j++ {
				budget := NewBudget(64 << 20)
				out, _ := runScript(nil, [][]byte{stream[:i], stream[i:j], stream[j:]}, io.EOF, budget)
				// an 'E' of length 4 then a cancel: whole messages, fine to compare loosely
				if ci >= 5 {
					if err := checkOut(t, stream, out, 0); err != nil {
						t.Fatalf("case %d cut %d/%d: %v", ci, i, j, err)
					}
				} else if !bytes.Equal(out, stream) {
					t.Fatalf("case %d cut %d/%d: out %q", ci, i, j, out)
				}
				if budget.left.Load() != 64<<20 {
					t.Fatal("leak")
				}
			}
		}
	}
}

// CancelSent before any chunk, sometimes twice, with a budget of 0, one
// or two buffers: the same, from the cancel on.
func TestCancelMidStream(t *testing.T) {
	for seed := range uint64(4000) {
		r := rand.New(rand.NewPCG(seed, 51))
		stream := slices.Concat(randomScript(r), randomScript(r), randomScript(r))
		chunks := cut(r, stream)
		c1 := r.IntN(len(chunks))
		c2 := c1 + r.IntN(3)
		budget := NewBudget(int64(r.IntN(3)) * coalesceSize)
		left := budget.left.Load()
		b := &scriptConn{chunks: chunks, end: io.EOF}
		a := &sinkConn{}
		s := New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: budget})
		s.asideFor = time.Minute
		cancelAt := 0
		b.hook = func(i int) {
			if i == c1 || i == c2 {
				if i == c1 {
					cancelAt = len(slices.Concat(chunks[:i]...))
				}
				s.CancelSent()
			}
		}
		if _, err := s.toA(nil); err != nil {
			t.Fatal(err)
		}
		// nothing before the chunk during whose read the cancel came is dropped
		if e := checkOut(t, stream, a.got.Bytes(), cancelAt); e != nil {
			t.Fatalf("seed %d: %v\nstream %q\nout    %q", seed, e, stream, a.got.Bytes())
		}
		if budget.left.Load() != left {
			t.Fatalf("seed %d: leak", seed)
		}
	}
}

// A write to the client that fails at any byte, with the stream cut
// anywhere: the budget is given back.
func TestCancelWriteFails(t *testing.T) {
	stream := slices.Concat(msg('D', "abc"), msg('D', "x"), canceled, ready)
	for fail := 1; fail < len(stream); fail++ {
		for i := 0; i <= len(stream); i++ {
			budget := NewBudget(64 << 20)
			b := &scriptConn{chunks: [][]byte{stream[:i], stream[i:]}, end: io.EOF}
			a := &sinkConn{failAt: fail}
			s := New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: budget})
			s.CancelSent()
			s.toA(nil)
			if budget.left.Load() != 64<<20 {
				t.Fatal("leak")
			}
		}
	}
}

// deadlineConn: Read fills the first buffer; the following non-blocking
// ReadBuffered returns the rest with the deadline's error, as ReadNow does
// when asideFor's deadline passes between the two.
type deadlineConn struct {
	scriptConn
	failBuffered bool
}

func (c *deadlineConn) ReadBuffered(p []byte) (int, error) {
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	if c.failBuffered {
		return n, os.ErrDeadlineExceeded
	}
	return n, nil
}

// asideFor can pass between a read that filled the first buffer and the
// read of what else has arrived, which then returns bytes with the
// deadline's error (as ReadNow does). The copy goes on; before, the
// session ended as if the database had gone away.
func TestCancelDeadlineWithData(t *testing.T) {
	rows := bytes.Repeat(msg('D', "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"), 100) // > firstReadSize
	for _, c := range []struct {
		name   string
		stream []byte
	}{
		{"the cancel's error", slices.Concat(rows, canceled, ready)},
		{"the result's end", slices.Concat(rows, msg('C', "SELECT 1"), ready)},
		{"another error", slices.Concat(rows, divByZero, ready)},
	} {
		b := &deadlineConn{scriptConn: scriptConn{chunks: [][]byte{c.stream}, end: io.EOF}, failBuffered: true}
		a := &sinkConn{}
		s := New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: NewBudget(64 << 20), Lost: func(error) []byte { return []byte("LOST") }})
		s.CancelSent()
		if _, err := s.toA(nil); err != nil {
			t.Errorf("%s: the copy ended with %v; want it to go on to the database's EOF", c.name, err)
		}
		if err := checkOut(t, c.stream, a.got.Bytes(), 0); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// A Stop that comes while rows are kept, with the chunk that would end the
// keeping (the result's end), drops the rows and writes the final message
// at the boundary where keeping began: toward a client at SSM's pace, 16
// MiB of rows would outlast StopLimit and lose the final message.
func TestCancelThenStopWithTheResultsEnd(t *testing.T) {
	final := msg('E', "SFATAL\x00VFATAL\x00C57P01\x00Mshutting down\x00")
	head, rows := msg('T', "x"), bytes.Repeat(msg('D', "0123456789"), 1000)
	b := &scriptConn{chunks: [][]byte{head, rows, slices.Concat(msg('C', "SELECT 1000"), ready)}, end: io.EOF}
	a := &sinkConn{}
	s := New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: NewBudget(64 << 20)})
	b.hook = func(i int) {
		switch i {
		case 0:
			s.CancelSent()
		case 2:
			s.Stop(final)
		}
	}
	if _, err := s.toA(nil); !errors.Is(err, errStopped) {
		t.Fatalf("toA returned %v; want it stopped", err)
	}
	if want := slices.Concat(head, final); !bytes.Equal(a.got.Bytes(), want) {
		t.Fatalf("the client got %d bytes; want the %d of the row description and the final message", a.got.Len(), len(want))
	}
}
