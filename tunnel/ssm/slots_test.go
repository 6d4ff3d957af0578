package ssm

import (
	"slices"
	"testing"
)

// Streams beside a lane stream take the bulk sessions in turn from a
// different one for each connection, so connections striped over fewer
// stripes than the tunnel has sessions (an older server's --max-stripes)
// still spread their bulk over all of them; streams beside a bulk stream
// wrap around the bulk sessions; none of them crosses the lane.
func TestBesideSlots(t *testing.T) {
	for _, c := range []struct {
		name             string
		sessions         int
		lane             bool
		slot, base, many int
		want             []int
	}{
		{"lane, full stripes", 4, true, 0, 0, 4, []int{1, 2, 3, 4}},
		{"lane, 2 beside, turn 0", 4, true, 0, 0, 2, []int{1, 2}},
		{"lane, 2 beside, turn 1", 4, true, 0, 1, 2, []int{2, 3}},
		{"lane, 2 beside, turn 3", 4, true, 0, 3, 2, []int{4, 1}},
		{"bulk stream with a lane", 4, true, 3, 0, 3, []int{4, 1, 2}},
		{"no lane", 3, false, 1, 0, 2, []int{2, 0}},
		{"one session and the lane", 1, true, 0, 5, 2, []int{1, 1}},
		{"one session, no lane", 1, false, 0, 0, 2, []int{0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			slots := c.sessions
			if c.lane {
				slots++
			}
			tun := &Tunnel{slots: make([]slot, slots), lane: c.lane}
			var got []int
			for i := 1; i <= c.many; i++ {
				got = append(got, tun.besideSlot(c.slot, c.base, i))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("beside slot %d from turn %d: %v; want %v", c.slot, c.base, got, c.want)
			}
		})
	}
}
