package cli

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/server"
)

// newRegistry creates the server's metric registry: process and Go
// runtime metrics, the server's own, and discovery's status read at
// scrape time.
func newRegistry(w *discovery.Watcher) (*prometheus.Registry, *server.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := server.NewMetrics(reg)
	gauge := func(name, help string, f func(discovery.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(w.Status()) })
	}
	reg.MustRegister(
		gauge("rdsproxy_discovery_targets", "Targets in the current snapshot.",
			func(s discovery.Status) float64 { return float64(s.Targets) }),
		gauge("rdsproxy_discovery_snapshot_age_seconds", "Age of the current snapshot (-1 before the first).",
			func(s discovery.Status) float64 {
				if s.LastSuccess.IsZero() {
					return -1
				}
				return time.Since(s.LastSuccess).Seconds()
			}),
		gauge("rdsproxy_discovery_refresh_duration_seconds", "Duration of the latest refresh.",
			func(s discovery.Status) float64 { return s.LastDuration.Seconds() }),
		gauge("rdsproxy_discovery_consecutive_failures", "Failed refreshes since the last success.",
			func(s discovery.Status) float64 { return float64(s.ConsecutiveFailures) }),
	)
	return reg, m
}
