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

// find is goleak.Find, retried until no goroutine is left over or
// patience has passed.
func find(opts ...goleak.Option) error {
	deadline := time.Now().Add(patience)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// VerifyNone fails t if goroutines other than those opts ignore still run
// after patience.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	if err := find(opts...); err != nil {
		t.Error(err)
	}
}

// VerifyTestMain runs m's tests and, when they pass, fails the package if
// goroutines other than those opts ignore still run after patience.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines left after the tests passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
