package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writes from several goroutines all arrive, whole, while String reads.
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 || len(b.String()) != 800*5 {
		t.Fatalf("%d whole lines in %d bytes, want 800", got, len(b.String()))
	}
}
