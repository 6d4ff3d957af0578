package stripe

import "sync"

// Buffers come from a few size classes so that an idle Conn holds none and a
// busy one reuses them. The largest class holds a whole frame.
var classes = [...]int{1 << 10, 4 << 10, 16 << 10, 64 << 10, headerLen + maxWire}

var pools [len(classes)]sync.Pool

// getBuf returns a buffer of length n (n ≤ headerLen+maxWire).
func getBuf(n int) []byte {
	for i, size := range classes {
		if n <= size {
			if p, ok := pools[i].Get().(*[]byte); ok {
				return (*p)[:n]
			}
			return make([]byte, n, size)
		}
	}
	return make([]byte, n)
}

// putBuf returns b to its pool if it came from one.
func putBuf(b []byte) {
	for i, size := range classes {
		if cap(b) == size {
			b = b[:0]
			pools[i].Put(&b)
			return
		}
	}
}
