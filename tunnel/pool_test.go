package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// hangGuard bounds waits that should end at once; it is no timing claim.
const hangGuard = time.Minute

// fakeReplica is a per-replica tunnel whose streams are net.Pipes; the far
// end echoes what it reads, as a server would answer.
type fakeReplica struct {
	id string

	mu      sync.Mutex
	fail    error // Dial fails with this while set
	refuse  bool  // streams end at once, before any answer
	dials   int
	streams []net.Conn // the far ends
	closed  bool
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup
}

func (f *fakeReplica) Dial(ctx context.Context) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("fake tunnel closed")
	}
	if f.fail != nil {
		return nil, f.fail
	}
	f.dials++
	near, far := net.Pipe()
	f.streams = append(f.streams, far)
	if f.refuse {
		far.Close()
	} else {
		f.wg.Go(func() { _, _ = io.Copy(far, far) })
	}
	return &halfConn{near}, nil
}

func (f *fakeReplica) Close() error {
	f.mu.Lock()
	if !f.closed {
		close(f.done)
	}
	f.closed = true
	for _, c := range f.streams {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

// waitClosed waits for the pool to close the tunnel.
func (f *fakeReplica) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(hangGuard):
		t.Fatalf("tunnel to %s not closed", f.id)
	}
}

func (f *fakeReplica) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeReplica) state() (dials int, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials, f.closed
}

// halfConn is a stream that can half-close, like the SSM and kube streams.
type halfConn struct{ net.Conn }

func (c *halfConn) CloseWrite() error { return nil }

// fakeServer resolves and opens fake replicas. With gated set, each
// Resolve waits for the test to let it return (see resolveNow).
type fakeServer struct {
	mu      sync.Mutex
	listed  []string
	failing error // Resolve fails with this while set
	openErr map[string]error
	opened  map[string][]*fakeReplica
	calls   int
	gated   bool
	started chan struct{} // a gated Resolve began
	gate    chan struct{} // lets a gated Resolve return
}

func newFakeServer(ids ...string) *fakeServer {
	return &fakeServer{listed: ids, openErr: map[string]error{}, opened: map[string][]*fakeReplica{},
		started: make(chan struct{}), gate: make(chan struct{})}
}

func (s *fakeServer) resolve(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	s.calls++
	gated := s.gated
	s.mu.Unlock()
	if gated {
		select {
		case s.started <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.listed), s.failing
}

func (s *fakeServer) open(_ context.Context, id string) (Tunnel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.openErr[id]; err != nil {
		return nil, err
	}
	f := &fakeReplica{id: id, done: make(chan struct{})}
	s.opened[id] = append(s.opened[id], f)
	return f, nil
}

func (s *fakeServer) list(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listed = ids
}

// replica returns the latest tunnel opened to id.
func (s *fakeServer) replica(t *testing.T, id string) *fakeReplica {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.opened[id]
	if len(rs) == 0 {
		t.Fatalf("no tunnel opened to %s", id)
	}
	return rs[len(rs)-1]
}

func (s *fakeServer) opens(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.opened[id])
}

// startPool starts a pool over s whose periodic resolve never fires in a
// test: resolves happen at start, on failures and through resolveNow.
func startPool(t *testing.T, s *fakeServer) *Pool {
	t.Helper()
	p, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open, Key: "instance",
		Interval: time.Hour, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	s.mu.Lock()
	s.gated = true
	s.mu.Unlock()
	return p
}

// resolveNow runs one resolve to its end: it asks for one (unless a
// failure already did), holds the resolver until the pool waits for it,
// then waits for the pool to apply its result.
func resolveNow(t *testing.T, p *Pool, s *fakeServer) {
	t.Helper()
	p.askResolve()
	select {
	case <-s.started:
	case <-time.After(hangGuard):
		t.Fatal("no resolve started")
	}
	p.mu.Lock()
	done := p.resolved
	p.mu.Unlock()
	select {
	case s.gate <- struct{}{}:
	case <-time.After(hangGuard):
		t.Fatal("resolve did not take the gate")
	}
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("resolve did not end")
	}
}

// dialOn dials and reports which replica carried the stream, checking
// that bytes go through.
func dialOn(t *testing.T, p *Pool, s *fakeServer) (net.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	c, err := p.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	pc := c.(*halfCloser)
	return c, pc.r.id
}

func TestPoolSpreadsByFewestStreams(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	got := map[string]int{}
	var conns []net.Conn
	for range 4 {
		c, id := dialOn(t, p, s)
		got[id]++
		conns = append(conns, c)
	}
	if got["i-a"] != 2 || got["i-b"] != 2 {
		t.Fatalf("streams per replica = %v, want 2 each", got)
	}
	// Close both of one replica's streams: the next two go there.
	var freed string
	for _, c := range conns {
		if id := c.(*halfCloser).r.id; freed == "" || id == freed {
			freed = id
			c.Close()
		}
	}
	for range 2 {
		if _, id := dialOn(t, p, s); id != freed {
			t.Fatalf("stream went to %s, want %s (fewest streams)", id, freed)
		}
	}
}

func TestPoolLeavesFailedReplicaOutUntilListed(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	a := s.replica(t, "i-a")
	a.setFail(errors.New("session refused"))
	for range 3 {
		if _, id := dialOn(t, p, s); id != "i-b" {
			t.Fatalf("stream went to %s while i-a fails", id)
		}
	}
	a.setFail(nil)
	// Still out: nothing listed it healthy since it failed, although it
	// carries the fewest streams.
	p.mu.Lock()
	out := p.replicas["i-a"].out
	p.mu.Unlock()
	if out == nil {
		t.Fatal("i-a not left out after its Dial failed")
	}
	resolveNow(t, p, s) // the failure's resolve lists it again
	if _, id := dialOn(t, p, s); id != "i-a" {
		t.Fatalf("stream went to %s, want i-a back (fewest streams)", id)
	}
}

func TestPoolGoneReplicaClosedAfterLastStream(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	var onA net.Conn
	for onA == nil {
		if c, id := dialOn(t, p, s); id == "i-a" {
			onA = c
		}
	}
	a := s.replica(t, "i-a")
	a.setFail(fmt.Errorf("instance terminated: %w", ErrReplicaGone))
	// DialEach tries every replica: i-b answers, i-a says it is gone.
	conns, err := p.DialEach(t.Context())
	if err != nil || len(conns) != 1 || conns[0].(*halfCloser).r.id != "i-b" {
		t.Fatalf("DialEach = %d streams, %v; want one on i-b", len(conns), err)
	}
	conns[0].Close()
	for range 3 {
		if _, id := dialOn(t, p, s); id != "i-b" {
			t.Fatalf("stream went to %s, want i-b", id)
		}
	}
	if _, closed := a.state(); closed {
		t.Fatal("gone replica closed while a stream still uses it")
	}
	if _, err := onA.Write([]byte("y")); err != nil {
		t.Fatalf("a stream open on the gone replica broke: %v", err)
	}
	onA.Close()
	a.waitClosed(t)
	// Still listed: the next resolve opens a fresh tunnel to it.
	resolveNow(t, p, s)
	if n := s.opens("i-a"); n != 2 {
		t.Fatalf("tunnels opened to i-a = %d, want 2 (a fresh one once listed again)", n)
	}
	if _, id := dialOn(t, p, s); id != "i-a" {
		t.Fatalf("stream went to %s, want the fresh i-a", id)
	}
}

func TestPoolVanishedReplicaDrains(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	var onA net.Conn
	for onA == nil {
		if c, id := dialOn(t, p, s); id == "i-a" {
			onA = c
		}
	}
	s.list("i-b", "i-c")
	resolveNow(t, p, s)
	a := s.replica(t, "i-a")
	got := map[string]int{}
	for range 4 {
		_, id := dialOn(t, p, s)
		got[id]++
	}
	if got["i-a"] != 0 || got["i-c"] == 0 {
		t.Fatalf("streams after i-a vanished and i-c appeared = %v", got)
	}
	if _, closed := a.state(); closed {
		t.Fatal("vanished replica closed while its stream is open")
	}
	onA.Close()
	a.waitClosed(t)
}

func TestPoolNoUsableReplica(t *testing.T) {
	s := newFakeServer("i-a")
	p := startPool(t, s)
	a := s.replica(t, "i-a")
	a.setFail(errors.New("target not connected"))
	errc := make(chan error, 1)
	go func() {
		_, err := p.Dial(t.Context())
		errc <- err
	}()
	// The Dial fails on i-a, asks for a resolve and waits for it; the
	// resolve lists i-a again, which fails once more: then it gives up.
	resolveNow(t, p, s)
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "target not connected") {
			t.Fatalf("Dial = %v, want the replica's failure", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Dial did not end")
	}
	if d, _ := a.state(); d != 0 {
		t.Fatalf("dials = %d", d)
	}
	a.setFail(nil)
	resolveNow(t, p, s)
	if _, id := dialOn(t, p, s); id != "i-a" {
		t.Fatalf("stream on %s", id)
	}
}

func TestPoolDialEachReachesEveryReplica(t *testing.T) {
	s := newFakeServer("i-a", "i-b", "i-c")
	p := startPool(t, s)
	conns, err := p.DialEach(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range conns {
		ids = append(ids, c.(*halfCloser).r.id)
		if _, err := c.Write([]byte("z")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"i-a", "i-b", "i-c"}) {
		t.Fatalf("DialEach reached %v", ids)
	}
}

func TestNewPoolErrors(t *testing.T) {
	denied := errors.New("access denied")
	s := newFakeServer("i-a", "i-b")
	s.openErr["i-a"], s.openErr["i-b"] = denied, denied
	if _, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open}); !errors.Is(err, denied) {
		t.Fatalf("NewPool with every open refused = %v, want the refusal", err)
	}
	s = newFakeServer()
	if _, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open, Key: "pod"}); err == nil ||
		!strings.Contains(err.Error(), "no pod of the server is listed healthy") {
		t.Fatalf("NewPool with nothing listed = %v", err)
	}
	s = newFakeServer()
	s.failing = errors.New("throttled")
	if _, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open}); !errors.Is(err, s.failing) {
		t.Fatalf("NewPool with a failing resolve = %v", err)
	}
	// One of two opens: the pool starts on the other.
	s = newFakeServer("i-a", "i-b")
	s.openErr["i-a"] = denied
	p, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, id := dialOn(t, p, s); id != "i-b" {
		t.Fatalf("stream on %s", id)
	}
	if _, err := NewPool(t.Context(), PoolConfig{}); err == nil {
		t.Fatal("NewPool without Resolve and Open succeeded")
	}
}

func TestPoolKeepsReplicasWhenResolveFails(t *testing.T) {
	s := newFakeServer("i-a")
	p := startPool(t, s)
	s.mu.Lock()
	s.failing = errors.New("throttled")
	s.mu.Unlock()
	resolveNow(t, p, s)
	if _, id := dialOn(t, p, s); id != "i-a" {
		t.Fatalf("stream on %s", id)
	}
}

func TestPoolCloseEndsEverything(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	c, _ := dialOn(t, p, s)
	p.Close()
	for _, id := range []string{"i-a", "i-b"} {
		if _, closed := s.replica(t, id).state(); !closed {
			t.Fatalf("tunnel to %s open after Close", id)
		}
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still open after Close")
	}
	if _, err := p.Dial(t.Context()); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Dial after Close = %v", err)
	}
	if _, err := p.DialEach(t.Context()); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("DialEach after Close = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPoolConcurrent dials, fails and closes from many goroutines while
// resolves change the list: for -race, and every count returns to zero.
func TestPoolConcurrent(t *testing.T) {
	s := newFakeServer("i-a", "i-b", "i-c")
	p, err := NewPool(t.Context(), PoolConfig{Resolve: s.resolve, Open: s.open, Interval: time.Millisecond, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 50 {
				c, err := p.Dial(t.Context())
				if err != nil {
					continue // every replica may be out for a moment
				}
				if i%7 == 0 {
					conns, _ := p.DialEach(t.Context())
					for _, c := range conns {
						c.Close()
					}
				}
				_, _ = c.Write([]byte("w"))
				c.Close()
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			switch i % 3 {
			case 0:
				s.list("i-a", "i-b")
			case 1:
				s.list("i-b", "i-c", "i-d")
			default:
				s.list("i-a", "i-c")
			}
			p.askResolve()
		}
	})
	wg.Wait()
	p.mu.Lock()
	for id, r := range p.replicas {
		if r.live != 0 {
			t.Errorf("%s: %d live streams after all closed", id, r.live)
		}
	}
	p.mu.Unlock()
	p.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, rs := range s.opened {
		for _, f := range rs {
			if _, closed := f.state(); !closed {
				t.Errorf("a tunnel to %s is open after Close", id)
			}
		}
	}
}

// TestPoolSettlesAfterChange: after a resolve that changed the list, the
// pool looks again by itself (after the backoff, not the hour-long
// interval), so a replacement that appears just after is found soon.
func TestPoolSettlesAfterChange(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	s.list("i-b")
	resolveNow(t, p, s)
	if _, id := dialOn(t, p, s); id != "i-b" {
		t.Fatalf("stream on %s, want i-b", id)
	}
	s.list("i-b", "i-c")
	select {
	case <-s.started: // a resolve nobody asked for
	case <-time.After(hangGuard):
		t.Fatal("no resolve followed a change")
	}
	p.mu.Lock()
	done := p.resolved
	p.mu.Unlock()
	s.gate <- struct{}{}
	<-done
	if _, id := dialOn(t, p, s); id != "i-c" {
		t.Fatalf("stream on %s, want the new i-c", id)
	}
}

// TestPoolRefusedStreamLeavesReplicaOut: a stream from Dial that ends
// before the server answered (a draining server no longer accepts) leaves
// its replica out like a failed Dial; one that was answered does not, nor
// do DialEach's cancel streams, which end without an answer.
func TestPoolRefusedStreamLeavesReplicaOut(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	a := s.replica(t, "i-a")
	a.mu.Lock()
	a.refuse = true
	a.mu.Unlock()
	conns, err := p.DialEach(t.Context())
	if err != nil || len(conns) != 2 {
		t.Fatalf("DialEach = %d, %v", len(conns), err)
	}
	for _, c := range conns {
		if c.(*halfCloser).r.id == "i-a" {
			_, _ = c.Read(make([]byte, 1)) // a cancel stream: no answer
		}
		c.Close()
	}
	var refusedOn net.Conn
	for refusedOn == nil {
		c, err := p.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.(*halfCloser).r.id == "i-a" {
			refusedOn = c
		}
	}
	p.mu.Lock()
	out := p.replicas["i-a"].out
	p.mu.Unlock()
	if out != nil {
		t.Fatalf("i-a left out before its stream was read: %v", out)
	}
	if _, err := refusedOn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a refused stream read")
	}
	for range 3 {
		if _, id := dialOn(t, p, s); id != "i-b" {
			t.Fatalf("stream went to %s after i-a refused one", id)
		}
	}
	p.mu.Lock()
	out = p.replicas["i-a"].out
	p.mu.Unlock()
	if out == nil || !strings.Contains(out.Error(), "a stream ended before the server answered") {
		t.Fatalf("i-a out = %v", out)
	}
}

// A stream's DialBeside opens its sibling on the same replica, whichever
// replica carries the fewest streams, and counts it: a new stream then
// goes to the other replica, and closing the sibling gives its count back.
func TestPoolDialBesideStaysOnReplica(t *testing.T) {
	s := newFakeServer("i-a", "i-b")
	p := startPool(t, s)
	first, id := dialOn(t, p, s)
	sp, ok := first.(Spreader)
	if !ok || sp.Sessions() != 1 {
		t.Fatalf("a pool stream is no Spreader of one session: %T", first)
	}
	sibling, err := sp.DialBeside(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := sibling.(*halfCloser).r.id; got != id {
		t.Fatalf("the sibling went to %s, its stream is on %s", got, id)
	}
	if dials, _ := s.replica(t, id).state(); dials != 2 {
		t.Fatalf("%s dialled %d streams, want 2", id, dials)
	}
	_, other := dialOn(t, p, s)
	if other == id {
		t.Fatalf("a new stream went to %s, which carries two", id)
	}
	sibling.Close()
	first.Close()
	if _, next := dialOn(t, p, s); next != id {
		t.Fatalf("after both closed, a new stream went to %s, want %s", next, id)
	}
}
