package server

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pendingSet holds the connections still in their startup phase: from
// accept until the client has proved itself (its IAM token passed the
// pre-check, or, for passthrough targets, its startup named a target).
//
// At the total or the source's cap, a connection that is waiting for its
// client (blocked reading its first packet, its startup, its TLS
// handshake or its token) is evicted to make room, the one that has
// waited longest first. An honest client sends its whole startup at once,
// so it waits for the server, not the other way round: a flood of idle or
// half-finished connections only ever evicts itself. When none is waiting
// for its client, the server is behind on all of them and the newcomer is
// the one turned away. Either way the connection closed gets 53300.
// Behind SSM and Kubernetes every client shares one source address, and
// refusing newcomers while idle connections hold the cap would let such a
// flood lock everyone out.
type pendingSet struct {
	max, maxPerSource int

	mu       sync.Mutex
	all      *list.List            // of *pendingConn, oldest first
	bySource map[string]*list.List // of *pendingConn, oldest first
}

// pendingConn is one connection in the set.
type pendingConn struct {
	conn    net.Conn
	src     string
	evicted atomic.Bool
	waiting atomic.Bool // its owner is blocked reading from the client

	inAll, inSource *list.Element // nil once removed
}

func newPendingSet(max, maxPerSource int) *pendingSet {
	return &pendingSet{max: max, maxPerSource: maxPerSource, all: list.New(), bySource: make(map[string]*list.List)}
}

// add puts c in the set and returns its entry, plus the entry evicted to
// make room, if any: another connection, or c's own when every connection
// at the cap is waiting for the server. An evicted connection's I/O is
// interrupted; its owner sees pc.evicted and answers it.
func (p *pendingSet) add(c net.Conn) (pc, evicted *pendingConn) {
	pc = &pendingConn{conn: c, src: sourceIP(c)}
	p.mu.Lock()
	defer p.mu.Unlock()
	src := p.bySource[pc.src]
	var full *list.List
	switch {
	case src != nil && src.Len() >= p.maxPerSource:
		full = src
	case p.all.Len() >= p.max:
		full = p.all
	}
	if full != nil {
		if evicted = waitingForClient(full); evicted == nil {
			evict(pc)
			return pc, pc
		}
		p.removeLocked(evicted)
		evict(evicted)
	}
	if src = p.bySource[pc.src]; src == nil {
		src = list.New()
		p.bySource[pc.src] = src
	}
	pc.inAll = p.all.PushBack(pc)
	pc.inSource = src.PushBack(pc)
	return pc, evicted
}

// waitingForClient is the oldest connection of l waiting for its client,
// or nil.
func waitingForClient(l *list.List) *pendingConn {
	for e := l.Front(); e != nil; e = e.Next() {
		if pc := e.Value.(*pendingConn); pc.waiting.Load() {
			return pc
		}
	}
	return nil
}

// evict marks pc evicted and wakes its owner's read or write at once.
func evict(pc *pendingConn) {
	pc.evicted.Store(true)
	pc.conn.SetDeadline(time.Unix(1, 0))
}

// awaitClient runs read, a read from pc's client, marked as waiting for
// the client, which makes pc the first to be evicted.
func awaitClient[T any](pc *pendingConn, read func() (T, error)) (T, error) {
	pc.waiting.Store(true)
	defer pc.waiting.Store(false)
	return read()
}

// remove takes pc out of the set; it is safe to call more than once, after
// an eviction, and for a newcomer that was never added.
func (p *pendingSet) remove(pc *pendingConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(pc)
}

func (p *pendingSet) removeLocked(pc *pendingConn) {
	if pc.inAll == nil {
		return
	}
	p.all.Remove(pc.inAll)
	src := p.bySource[pc.src]
	src.Remove(pc.inSource)
	if src.Len() == 0 {
		delete(p.bySource, pc.src)
	}
	pc.inAll, pc.inSource = nil, nil
}

// len is the number of pending connections.
func (p *pendingSet) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.Len()
}

// setDeadline sets c's deadline unless it was evicted, in which case the
// eviction's past deadline stays: evict stores the flag before it sets
// the deadline, so one of the two always sees the other.
func (pc *pendingConn) setDeadline(c net.Conn, t time.Time) {
	c.SetDeadline(t)
	if pc.evicted.Load() {
		c.SetDeadline(time.Unix(1, 0))
	}
}

func sourceIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}
