package server

import (
	"fmt"
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

// The database picks the SQLSTATEs in upstream-<SQLSTATE> refusal
// reasons: the first maxUpstreamCodes distinct ones keep their own label,
// later ones count as upstream-other, and other reasons pass unchanged.
func TestUpstreamCodesBounded(t *testing.T) {
	var c codeSet
	for i := range maxUpstreamCodes {
		reason := fmt.Sprintf("upstream-%05d", i)
		if got := c.label(reason); got != reason {
			t.Fatalf("code %d of %d: label %q, want its own", i+1, maxUpstreamCodes, got)
		}
	}
	if got := c.label("upstream-99999"); got != "upstream-other" {
		t.Fatalf("one code past the bound: label %q, want upstream-other", got)
	}
	if got := c.label("upstream-00000"); got != "upstream-00000" {
		t.Fatalf("a code seen before the bound: label %q, want its own", got)
	}
	for _, own := range []string{"too-many-sessions", "upstream-dial", "upstream-tls", "upstream-timeout"} {
		if got := c.label(own); got != own {
			t.Fatalf("past the bound, rdsproxy's own reason %q: label %q, want its own", own, got)
		}
	}
}
