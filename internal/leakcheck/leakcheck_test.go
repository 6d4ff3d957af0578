package leakcheck

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder is a testing.TB that notes Error instead of failing the test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Error(...any) { r.failed = true }

// A goroutine that is still ending (here: for another second, longer than
// goleak alone waits) passes; one that never ends fails once the wait
// (here 2 s) has passed.
func TestVerifyNone(t *testing.T) {
	t.Run("ending", func(t *testing.T) {
		ignore := goleak.IgnoreCurrent()
		done := make(chan struct{})
		go func() { <-done }()
		time.AfterFunc(time.Second, func() { close(done) })
		r := &recorder{TB: t}
		verifyNone(r, 2*time.Second, ignore)
		if r.failed {
			t.Error("a goroutine that ended within a second was reported as a leak")
		}
	})
	t.Run("leaked", func(t *testing.T) {
		ignore := goleak.IgnoreCurrent()
		stop := make(chan struct{})
		defer close(stop)
		go func() { <-stop }()
		r := &recorder{TB: t}
		verifyNone(r, 2*time.Second, ignore)
		if !r.failed {
			t.Error("a goroutine that never ended was not reported")
		}
	})
}
