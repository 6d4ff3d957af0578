package server

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A new server already has every cancel result at 0, so that an alert on
// the rate of forwarded-idle or failed cancels works before the first one.
func TestCancelResultsFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, f := range families {
		if f.GetName() != "rdsproxy_cancel_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() != 0 || len(m.GetLabel()) != 1 {
				t.Errorf("a new server's %v", m)
			}
			results = append(results, m.GetLabel()[0].GetValue())
		}
	}
	slices.Sort(results)
	if want := []string{"dropped", "failed", "forwarded", "forwarded-idle", "orphaned"}; !slices.Equal(results, want) {
		t.Errorf("a new server's cancel results: %v, want %v at 0", results, want)
	}
}
