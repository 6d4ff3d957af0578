package server

import (
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// addrConn is a net.Conn with a chosen remote address; only the deadline
// methods are used by the pending set.
type addrConn struct {
	net.Conn
	remote   net.Addr
	deadline time.Time
}

func (c *addrConn) RemoteAddr() net.Addr          { return c.remote }
func (c *addrConn) SetDeadline(t time.Time) error { c.deadline = t; return nil }

func connFrom(ip string) *addrConn {
	return &addrConn{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}
}

// At the per-source cap that source's oldest connection waiting for its
// client goes; at the total cap the oldest of all such. With none waiting
// for its client the newcomer is turned away. An evicted connection's
// deadline is in the past, so its owner wakes at once.
func TestPendingEvictsTheLongestWaiting(t *testing.T) {
	p := newPendingSet(4, 2)
	add := func(ip string) (*pendingConn, *pendingConn) {
		pc, ev := p.add(connFrom(ip))
		pc.waiting.Store(true) // its owner reads from the client
		return pc, ev
	}
	a1, _ := add("10.0.0.1")
	b1, _ := add("10.0.0.2")
	a2, _ := add("10.0.0.1")
	if _, ev := add("10.0.0.1"); ev != a1 {
		t.Fatalf("third from 10.0.0.1 evicted %v, want that source's oldest", ev)
	}
	if !a1.evicted.Load() || !a1.conn.(*addrConn).deadline.Before(time.Now()) {
		t.Fatal("the evicted connection was not marked and woken")
	}
	add("10.0.0.3")
	if _, ev := add("10.0.0.4"); ev != b1 {
		t.Fatalf("at the total cap evicted %v, want the oldest of all (10.0.0.2)", ev)
	}
	p.remove(a2)
	p.remove(a2) // twice is harmless
	if got := p.len(); got != 3 {
		t.Fatalf("len = %d after a removal, want 3", got)
	}
	// setDeadline cannot undo an eviction.
	c := connFrom("10.0.0.5")
	pc, _ := p.add(c)
	pc.evicted.Store(true)
	pc.setDeadline(c, time.Now().Add(time.Hour))
	if !c.deadline.Before(time.Now()) {
		t.Fatal("a later deadline undid the eviction")
	}
}

// Failures drain a (source, key) budget and a source budget; successes
// cost nothing; a budget refills; a key's budget at one source does not
// touch the same key elsewhere.
func TestFailureBudgets(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	f := newFailureBudgets(AuthFailureLimit{PerKey: 2, PerKeyRate: 1, PerSource: 5, PerSourceRate: 1, MaxTracked: 100})
	for range 2 {
		if b, _ := f.check("AKIA1", "10.0.0.1", now); b != "" {
			t.Fatalf("refused before the budget was spent: %s", b)
		}
		f.fail("AKIA1", "10.0.0.1", now)
	}
	if b, wait := f.check("AKIA1", "10.0.0.1", now); b != "access key" || wait <= 0 || wait > time.Second {
		t.Fatalf("check = %q, %v; want the access key's budget, about a second", b, wait)
	}
	if b, _ := f.check("AKIA1", "10.0.0.9", now); b != "" {
		t.Fatalf("the same key from another address: %q, want allowed", b)
	}
	if b, _ := f.check("AKIA1", "10.0.0.1", now.Add(time.Second)); b != "" {
		t.Fatalf("after a second: %q, want refilled", b)
	}
	for i := range 3 {
		f.fail("AKIA-other-"+string(rune('a'+i)), "10.0.0.1", now)
	}
	if b, _ := f.check("AKIA-new", "10.0.0.1", now); b != "address" {
		t.Fatalf("five failures from one address: %q, want the address's budget", b)
	}
	if b, _ := f.check("", "10.0.0.2", now); b != "" {
		t.Fatalf("a passthrough login (no key) from a clean address: %q", b)
	}
}

func TestClip(t *testing.T) {
	if got := clip("alice"); got != "alice" {
		t.Errorf("clip(alice) = %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes, two per rune
	got := clip(long)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "…(200 bytes)") || len(got) > maxLogField+20 {
		t.Errorf("clip of 200 bytes = %q", got)
	}
}

// Eviction prefers a connection blocked on its client over one the
// server has not got to yet: an honest client's whole startup is already
// in the socket, so it never waits for its client. When every one waits
// for the server, the newcomer is turned away and the rest kept.
func TestPendingEvictsWaitingForTheClientFirst(t *testing.T) {
	p := newPendingSet(3, 3)
	honest, _ := p.add(connFrom("127.0.0.1")) // oldest, but the server has not read it yet
	idle, _ := p.add(connFrom("127.0.0.1"))
	idle.waiting.Store(true)
	p.add(connFrom("127.0.0.1"))
	if _, ev := p.add(connFrom("127.0.0.1")); ev != idle {
		t.Fatalf("evicted %v, want the connection waiting for its client", ev)
	}
	newcomer, ev := p.add(connFrom("127.0.0.1"))
	if ev != newcomer || !newcomer.evicted.Load() || honest.evicted.Load() {
		t.Fatalf("with none waiting for its client, evicted %v; want the newcomer, and the oldest kept", ev)
	}
	if got := p.len(); got != 3 {
		t.Fatalf("len = %d, want the 3 kept", got)
	}
}
