package iamtoken

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// TestCacheLeaderCancelled checks that a Get waiting on another caller's
// build does not inherit that caller's cancellation: it builds again with
// its own context.
func TestCacheLeaderCancelled(t *testing.T) {
	const tok = "db:5432?fake"
	leaderIn := make(chan struct{})
	build := func(ctx context.Context, endpoint, region, user string) (string, error) {
		if ctx.Done() == nil {
			return tok, nil // the waiter's own build (Background context)
		}
		close(leaderIn)
		<-ctx.Done() // the leader blocks until cancelled
		return "", ctx.Err()
	}
	c := NewCache(build, nil)
	leaderCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Get(leaderCtx, "db:5432", "r", "u")
		leaderErr <- err
	}()
	<-leaderIn
	waiter := make(chan error, 1)
	var got string
	go func() {
		var err error
		got, err = c.Get(context.Background(), "db:5432", "r", "u")
		waiter <- err
	}()
	for !c.hasWaiter() {
		runtime.Gosched()
	}
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader error = %v, want context.Canceled", err)
	}
	if err := <-waiter; err != nil || got != tok {
		t.Fatalf("waiter = %q, %v; want the token from its own build", got, err)
	}
}

// TestCacheConcurrentGetsBuildOnce holds the first build open until every
// other Get is waiting on it, then checks all got the one token.
func TestCacheConcurrentGetsBuildOnce(t *testing.T) {
	const n = 32
	gate := make(chan struct{})
	var builds atomic.Int64
	build := func(ctx context.Context, endpoint, region, user string) (string, error) {
		builds.Add(1)
		<-gate
		return "db:5432?token-" + strconv.FormatInt(builds.Load(), 10), nil
	}
	c := NewCache(build, nil)
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { tokens[i], errs[i] = c.Get(context.Background(), "db:5432", "r", "u") })
	}
	for c.waiting() < n-1 {
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || tokens[i] != "db:5432?token-1" {
			t.Fatalf("Get %d = %q, %v; want the single build's token", i, tokens[i], errs[i])
		}
	}
	if b := builds.Load(); b != 1 {
		t.Fatalf("builds = %d for %d concurrent Gets, want 1", b, n)
	}
}

func (c *Cache) hasWaiter() bool { return c.waiting() > 0 }

// waiting counts Gets blocked on in-flight builds.
func (c *Cache) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.inflight {
		n += call.waiters
	}
	return n
}
