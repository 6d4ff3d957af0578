// Package leakcheck checks that tests leave no goroutine behind, with
// patience: goleak by itself gives goroutines that are ending less than
// half a second, which a machine at load 10-30 exceeds (a stream's
// goroutines end only once the peer's close reaches them). Tests only.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// patience is how long goroutines that are ending get to end.
const patience = 10 * time.Second

// slow is how long goleak alone would have waited: goroutines that take
// longer are logged, so that one held by a timeout shows up.
const slow = 500 * time.Millisecond

// find is goleak.Find, retried until no goroutine is left over or wait
// has passed. It returns how long the goroutines took to end.
func find(wait time.Duration, opts ...goleak.Option) (time.Duration, error) {
	start := time.Now()
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Since(start) > wait {
			return time.Since(start), err
		}
	}
}

// VerifyNone fails t if goroutines other than those opts ignore still run
// after patience. A test that has already failed is not checked: its
// connections may be closed only by its cleanups, which run later.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	verifyNone(t, patience, opts...)
}

func verifyNone(t testing.TB, wait time.Duration, opts ...goleak.Option) {
	t.Helper()
	if t.Failed() {
		return
	}
	took, err := find(wait, opts...)
	switch {
	case err != nil:
		t.Error(err)
	case took > slow:
		t.Logf("leakcheck: goroutines took %v to end", took.Round(time.Millisecond))
	}
}

// VerifyTestMain runs m's tests and, when they pass, fails the package if
// goroutines other than those opts ignore still run after patience.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if _, err := find(patience, opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines left after the tests passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
