package iamtoken_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// fakeClock is a settable clock for the cache.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }
func (c *fakeClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// signer builds real tokens at the fake clock's time and counts builds.
type signer struct {
	clock  *fakeClock
	builds atomic.Int64
	fail   atomic.Bool
}

func (s *signer) build(ctx context.Context, endpoint, region, user string) (string, error) {
	s.builds.Add(1)
	if s.fail.Load() {
		return "", errors.New("no credentials")
	}
	return iamtoken.SignAt(ctx, endpoint, region, user, testCreds(""), s.clock.Now(), 15*time.Minute)
}

func TestCacheReuseAndRefresh(t *testing.T) {
	clock := &fakeClock{now: testTime}
	s := &signer{clock: clock}
	c := iamtoken.NewCache(s.build, clock.Now)
	ctx := context.Background()

	first, err := c.Get(ctx, testEndpoint, testRegion, "u")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	clock.Add(9*time.Minute + 59*time.Second) // 5m01s left: still reused
	if again, err := c.Get(ctx, testEndpoint, testRegion, "u"); err != nil || again != first {
		t.Fatalf("Get within window: err=%v, same token=%v", err, again == first)
	}
	if n := s.builds.Load(); n != 1 {
		t.Fatalf("builds = %d after reuse, want 1", n)
	}
	if _, err := c.Get(ctx, testEndpoint, testRegion, "other"); err != nil {
		t.Fatalf("Get other user: %v", err)
	}
	if n := s.builds.Load(); n != 2 {
		t.Fatalf("builds = %d after another user, want 2", n)
	}
	clock.Add(time.Second) // 5m left: refresh
	fresh, err := c.Get(ctx, testEndpoint, testRegion, "u")
	if err != nil {
		t.Fatalf("Get after window: %v", err)
	}
	if fresh == first || s.builds.Load() != 3 {
		t.Fatalf("after window: new token=%v builds=%d, want new token and 3 builds", fresh != first, s.builds.Load())
	}
}

func TestCacheErrorsNotCached(t *testing.T) {
	clock := &fakeClock{now: testTime}
	s := &signer{clock: clock}
	s.fail.Store(true)
	c := iamtoken.NewCache(s.build, clock.Now)
	ctx := context.Background()
	if _, err := c.Get(ctx, testEndpoint, testRegion, "u"); err == nil {
		t.Fatal("Get succeeded with failing builder")
	}
	s.fail.Store(false)
	if _, err := c.Get(ctx, testEndpoint, testRegion, "u"); err != nil {
		t.Fatalf("Get after builder recovered: %v", err)
	}
	if n := s.builds.Load(); n != 2 {
		t.Fatalf("builds = %d, want 2 (error must not be cached)", n)
	}
}
