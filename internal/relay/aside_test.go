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

// What a database sends after a cancel, and what the client then gets.
var (
	canceled  = msg('E', "SERROR\x00VERROR\x00C57014\x00Mcanceling statement due to user request\x00")
	divByZero = msg('E', "SERROR\x00VERROR\x0022012\x00Mdivision by zero\x00")
	ready     = msg('Z', "I")
)

// answersCancel is the test's own reading of an ErrorResponse's start.
func answersCancel(word []byte) bool {
	return bytes.Contains(word, []byte("VERROR\x00")) && bytes.Contains(word, []byte("C57014\x00"))
}

// asideSession runs a session that sets aside after cancels within budget,
// with asideFor as given (0: the default).
func asideSession(t *testing.T, budget *Budget, asideFor time.Duration) (client, upstream net.Conn, sess *Session, done chan Result) {
	client, a := tcpPair(t)
	b, upstream := tcpPair(t)
	sess = New(a, b, Options{FrameToA: true, CancelAnswer: answersCancel, Aside: budget})
	if asideFor > 0 {
		sess.asideFor = asideFor
	}
	done = make(chan Result, 1)
	go func() { done <- sess.Run(nil, nil) }()
	return client, upstream, sess, done
}

// cancelAfter sends before; once the client has it all (the relay waits
// on the database), calls CancelSent and sends the parts of after, with
// gap between them; then ends the database's stream. It returns what the
// client got after before, and the session's Result.
func cancelAfter(t *testing.T, budget *Budget, asideFor, gap time.Duration, before []byte, after ...[]byte) ([]byte, Result) {
	t.Helper()
	client, upstream, sess, done := asideSession(t, budget, asideFor)
	go writeInPieces(rand.New(rand.NewPCG(uint64(len(before)), 0)), upstream, before)
	r := rand.New(rand.NewPCG(uint64(len(before)), uint64(len(after))))
	readN(t, client, len(before))
	sess.CancelSent()
	go func() {
		for i, p := range after {
			if i > 0 {
				time.Sleep(gap)
			}
			writeInPieces(r, upstream, p)
		}
		upstream.(*net.TCPConn).CloseWrite()
	}()
	client.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("the client's read: %v", err)
	}
	client.Close()
	res := <-done
	if res.Err != nil {
		t.Fatalf("session ended with %v", res.Err)
	}
	return got, res
}

// After a cancel, the rows and notices the database sent before its
// cancel error never reach the client, except what the relay was already
// copying (one read): the client's statement ends as if the cancel had
// come that much earlier, without waiting for megabytes at a slow
// client's pace. In a COPY out too.
func TestCancelDropsWhatCameBeforeItsError(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name         string
		before, rows []byte
	}{
		{"rows", slices.Concat(msg('T', "x"), randomRows(r, 'D', 1<<20)), randomRows(r, 'D', 6<<20)},
		{"notices", nil, randomRows(r, 'N', 6<<20)},
		{"rows and notices", slices.Concat(msg('T', "x"), randomRows(r, 'D', 1<<10)),
			slices.Concat(randomRows(r, 'D', 3<<20), randomRows(r, 'N', 1<<20), randomRows(r, 'D', 2<<20))},
		{"COPY out", slices.Concat(msg('H', "\x00\x00\x00"), randomRows(r, 'd', 1<<20)), randomRows(r, 'd', 6<<20)},
	} {
		budget := NewBudget(64 << 20)
		got, res := cancelAfter(t, budget, time.Minute, 0, c.before, c.rows, canceled, ready)
		end := slices.Concat(canceled, ready)
		passed := len(got) - len(end)
		if !bytes.HasSuffix(got, end) || passed < 0 || !bytes.Equal(got[:passed], c.rows[:passed]) || !boundaryAt(c.rows, passed) {
			t.Fatalf("%s: the client got %d bytes after the cancel, ending with the error %v; want whole messages of those sent, then the error and ReadyForQuery", c.name, len(got), bytes.HasSuffix(got, end))
		}
		if passed > coalesceSize+6100 { // one read, and the end of the message it stopped in
			t.Errorf("%s: %d bytes of the %d sent before the cancel's error reached the client; want at most one read's", c.name, passed, len(c.rows))
		}
		if res.DroppedToA != int64(len(c.rows)-passed) {
			t.Errorf("%s: Result.DroppedToA = %d; want the %d bytes the client did not get", c.name, res.DroppedToA, len(c.rows)-passed)
		}
		if left := budget.left.Load(); left != 64<<20 {
			t.Errorf("%s: the budget has %d bytes left after the session; want all %d back", c.name, left, 64<<20)
		}
	}
}

// After a cancel, whatever does not end with the cancel's error reaches
// the client whole and in order: a result that ended first (the cancel
// came too late), another error, a NotificationResponse among the rows,
// replication's COPY BOTH, more than the budget or than a session may set
// aside, rows that stop coming for longer than the relay waits, a
// database that goes away.
func TestCancelKeepsWhatItDidNotEnd(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	rows := randomRows(r, 'D', 2<<20)
	for _, c := range []struct {
		name     string
		budget   int64
		asideFor time.Duration
		after    [][]byte
	}{
		{"the result ended first", 64 << 20, 0, [][]byte{rows, msg('C', "SELECT 9"), ready}},
		{"another error", 64 << 20, 0, [][]byte{rows, divByZero, ready}},
		{"a notification among the rows", 64 << 20, 0, [][]byte{rows, msg('A', "\x00\x00\x00\x01c\x00p\x00"), rows, canceled, ready}},
		{"COPY BOTH", 64 << 20, 0, [][]byte{msg('W', "\x00\x00\x00"), randomRows(r, 'd', 1<<20), canceled, ready}},
		{"over the budget", 256 << 10, 0, [][]byte{rows, canceled, ready}},
		{"over a session's most", 64 << 20, 0, [][]byte{randomRows(r, 'D', asideMax+(1<<20)), canceled, ready}},
		{"rows that stop coming", 64 << 20, 50 * time.Millisecond, [][]byte{rows, slices.Concat(canceled, ready)}},
		{"the database went away", 64 << 20, 0, [][]byte{rows}},
	} {
		budget := NewBudget(c.budget)
		gap := time.Duration(0)
		if c.asideFor > 0 {
			gap = 30 * c.asideFor // long past asideFor, however loaded the machine
		}
		got, res := cancelAfter(t, budget, c.asideFor, gap, msg('T', "x"), c.after...)
		if want := slices.Concat(c.after...); !bytes.Equal(got, want) || res.DroppedToA != 0 {
			t.Errorf("%s: the client got %d bytes after the cancel (%d dropped); want the %d sent, the same up to byte %d", c.name, len(got), res.DroppedToA, len(want), samePrefix(got, want))
		}
		if left := budget.left.Load(); left != c.budget {
			t.Errorf("%s: the budget has %d bytes left after the session; want all %d back", c.name, left, c.budget)
		}
	}
}

// A cancel that lands anywhere in a stream of rows arriving in random
// pieces leaves the client whole messages and then the cancel's error.
func TestCancelAnywhere(t *testing.T) {
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 5))
		stream := slices.Concat(msg('T', "x"), randomRows(r, 'D', 3<<20), canceled, ready)
		budget := NewBudget(64 << 20)
		client, upstream, sess, done := asideSession(t, budget, time.Minute)
		go func() {
			writeInPieces(rand.New(rand.NewPCG(seed, 6)), upstream, stream)
			upstream.(*net.TCPConn).CloseWrite()
		}()
		n := r.IntN(1 << 20)
		readN(t, client, n)
		sess.CancelSent()
		client.SetReadDeadline(time.Now().Add(60 * time.Second))
		rest, err := io.ReadAll(client)
		if err != nil {
			t.Fatal(err)
		}
		client.Close()
		<-done
		end := slices.Concat(canceled, ready)
		passed := len(rest) - len(end)
		if !bytes.HasSuffix(rest, end) || passed < 0 || !bytes.Equal(rest[:passed], stream[n:n+passed]) || !boundaryAt(stream, n+passed) {
			t.Fatalf("seed %d: after the cancel the client got %d bytes; want whole messages of those sent, then the error and ReadyForQuery", seed, len(rest))
		}
		if budget.left.Load() != 64<<20 {
			t.Fatalf("seed %d: the budget was not given back", seed)
		}
	}
}

// Stopped while it sets rows aside, a session drops them and writes its
// final message at once, at the boundary where it began to set aside.
func TestCancelThenStop(t *testing.T) {
	budget := NewBudget(64 << 20)
	client, upstream, sess, done := asideSession(t, budget, time.Minute)
	head := slices.Concat(msg('T', "x"), randomRows(rand.New(rand.NewPCG(6, 7)), 'D', 64<<10))
	row := msg('D', string(bytes.Repeat([]byte{'r'}, 3001)))
	upstream.Write(head)
	readN(t, client, len(head))
	sess.CancelSent()
	go streamRows(upstream, row)
	for wait := time.Now().Add(20 * time.Second); budget.left.Load() > 63<<20; time.Sleep(time.Millisecond) {
		if time.Now().After(wait) {
			t.Fatal("no MiB of rows was set aside after the cancel")
		}
	}
	final := msg('E', "SFATAL\x00VFATAL\x00C57P01\x00Mshutting down\x00")
	sess.Stop(final)
	client.SetReadDeadline(time.Now().Add(20 * time.Second))
	rest, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	rows := len(rest) - len(final)
	if !bytes.HasSuffix(rest, final) || rows < 0 || rows%len(row) != 0 {
		t.Fatalf("after Stop the client got %d bytes; want whole rows of %d bytes and then the final message", len(rest), len(row))
	}
	if rows > coalesceSize+len(row) {
		t.Errorf("after Stop the client got %d bytes of rows; want at most one read's, not the MiB set aside", rows)
	}
	if res := <-done; !res.Stopped {
		t.Fatalf("session ended with %+v; want it stopped", res)
	}
	if budget.left.Load() != 64<<20 {
		t.Fatal("the budget was not given back")
	}
}

// A cancel long past (one the backend ignored: it was idle) does not
// drop what a later statement sends before its own error.
func TestOldCancelIsIgnored(t *testing.T) {
	budget := NewBudget(64 << 20)
	client, upstream, sess, done := asideSession(t, budget, 200*time.Millisecond)
	upstream.Write(ready) // the relay has started, and waits for the database
	readN(t, client, len(ready))
	sess.CancelSent()
	time.Sleep(400 * time.Millisecond)
	stream := slices.Concat(msg('T', "x"), randomRows(rand.New(rand.NewPCG(8, 9)), 'D', 2<<20), canceled, ready)
	go func() {
		upstream.Write(stream)
		upstream.(*net.TCPConn).CloseWrite()
	}()
	client.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("the client got %d of %d bytes (%v); want them all", len(got), len(stream), err)
	}
	client.Close()
	<-done
}

// boundaryAt reports whether a stream of whole messages has a message
// boundary at offset n.
func boundaryAt(stream []byte, n int) bool {
	var f framer
	f.feed(stream[:n])
	return f.atBoundary()
}
