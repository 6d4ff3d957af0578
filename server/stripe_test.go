package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// refusedJoin asserts err is the 08P01 stripe-join refusal a joining
// stripe gets, with a message containing want.
func refusedJoin(t *testing.T, j *joinable, err error, want string) {
	t.Helper()
	if j != nil || err == nil {
		t.Fatalf("claim = %v, %v; want a refusal", j, err)
	}
	var pe *pgwire.Error
	if !errors.As(err, &pe) {
		t.Fatalf("claim error %v (%T), want a *pgwire.Error", err, err)
	}
	if pe.Code != pgwire.CodeProtocolViolation || pe.Reason != contract.ReasonStripeJoin || !strings.Contains(pe.Message, want) {
		t.Fatalf("claim refused with %s %s %q, want 08P01 %s containing %q", pe.Code, pe.Reason, pe.Message, contract.ReasonStripeJoin, want)
	}
}

// A stripe naming an id no live striped connection has is refused.
func TestJoinTableUnknownID(t *testing.T) {
	var tab joinTable
	now := time.Now()
	j, err := tab.claim("00000000000000000000000000000000", now)
	refusedJoin(t, j, err, "names no connection")
	tab.open("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nil, 4, now.Add(joinWindow))
	j, err = tab.claim("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", now)
	refusedJoin(t, j, err, "names no connection")
	if j, err := tab.claim("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", now); err != nil || j == nil {
		t.Fatalf("claim of the live id = %v, %v; want a place", j, err)
	}
}

// Joins are taken up to the window's end, and refused after it, even
// with places left.
func TestJoinTableWindow(t *testing.T) {
	var tab joinTable
	opened := time.Now()
	expires := opened.Add(joinWindow)
	id := "0123456789abcdef0123456789abcdef"
	tab.open(id, nil, 4, expires)
	if _, err := tab.claim(id, opened.Add(joinWindow/2)); err != nil {
		t.Fatalf("claim within the window: %v", err)
	}
	if _, err := tab.claim(id, expires); err != nil {
		t.Fatalf("claim at the window's last instant: %v", err)
	}
	j, err := tab.claim(id, expires.Add(time.Millisecond))
	refusedJoin(t, j, err, "join window")
}

// A connection of K stripes takes K-1 joins, and refuses the next; a
// refusal does not use a place up.
func TestJoinTableBeyondStripes(t *testing.T) {
	for _, k := range []int{1, 2, 4, contract.MaxTransportStripes} {
		var tab joinTable
		now := time.Now()
		id := "ffffffffffffffffffffffffffffffff"
		opened := tab.open(id, nil, k, now.Add(joinWindow))
		for i := 1; i < k; i++ {
			j, err := tab.claim(id, now)
			if err != nil || j != opened {
				t.Fatalf("k=%d: join %d = %v, %v; want the connection's place", k, i, j, err)
			}
		}
		for range 2 {
			j, err := tab.claim(id, now)
			refusedJoin(t, j, err, "has all its stripes")
		}
	}
}

// When its session ends, a connection takes no more joins, and the
// stripes that joined (waiting on done) are released.
func TestJoinTableCloseEndsJoins(t *testing.T) {
	var tab joinTable
	now := time.Now()
	id := "abcdefabcdefabcdefabcdefabcdef12"
	opened := tab.open(id, nil, 4, now.Add(joinWindow))
	j, err := tab.claim(id, now)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() { <-j.done; close(released) }() // as a joined stripe waits in Server.join
	select {
	case <-released:
		t.Fatal("a joined stripe was released while its connection lives")
	default:
	}
	tab.close(opened)
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not release the joined stripe")
	}
	j, err = tab.claim(id, now)
	refusedJoin(t, j, err, "names no connection")
	// Another connection's id is unaffected.
	other := tab.open("11111111111111111111111111111111", nil, 2, now.Add(joinWindow))
	if j, err := tab.claim(other.id, now); err != nil || j != other {
		t.Fatalf("claim on another connection after a close = %v, %v", j, err)
	}
}
