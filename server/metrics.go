package server

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// NewRegistry creates a server process's metric registry: Go runtime and
// process metrics, the server's own (returned for Config.Metrics), and
// discovery's status, which status reads at scrape time (typically
// (*discovery.Watcher).Status).
func NewRegistry(status func() discovery.Status) (*prometheus.Registry, *Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := NewMetrics(reg)
	gauge := func(name, help string, f func(discovery.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(status()) })
	}
	reg.MustRegister(
		gauge("rdsproxy_discovery_targets", "Targets in the current snapshot.",
			func(s discovery.Status) float64 { return float64(s.Targets) }),
		gauge("rdsproxy_discovery_snapshot_age_seconds", "Seconds since the last refresh in which every region answered (-1 before the first).",
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

// Metrics are the server's Prometheus metrics. Label values come only from
// fixed sets (outcomes, reasons) or from target names in the snapshot, so
// cardinality is bounded whatever clients send.
type Metrics struct {
	sessionsActive prometheus.Gauge
	sessions       *prometheus.CounterVec // target, outcome
	bytes          *prometheus.CounterVec // target, direction
	authFailures   *prometheus.CounterVec // reason
	dialSeconds    prometheus.Histogram
	tlsSeconds     prometheus.Histogram
	cancels        *prometheus.CounterVec // result
	droppedBytes   prometheus.Counter     // dropped after cancels
	refusals       *prometheus.CounterVec // reason
	suppressed     prometheus.Counter
	identityChecks *prometheus.CounterVec // result
	stsSeconds     prometheus.Histogram
	upstreamCodes  codeSet // the reasons upstream-<SQLSTATE> counted under their own label
}

// maxUpstreamCodes bounds the label values that databases' own SQLSTATEs
// add to the refusal and auth-failure counters (reason upstream-<SQLSTATE>):
// the database, or whoever answers for a passthrough target without TLS,
// picks those codes. After this many distinct ones, a new code counts as
// upstream-other.
const maxUpstreamCodes = 64

// upstreamPrefix begins the reason of a session the database refused.
const upstreamPrefix = "upstream-"

// codeSet is the upstream reasons seen so far, up to maxUpstreamCodes.
type codeSet struct {
	mu   sync.Mutex
	seen map[string]bool
}

// label returns reason as the label to count it under. Only a database's
// codes are bounded: rdsproxy's own upstream-* reasons (upstream-dial,
// upstream-tls, …) are a fixed set and always keep their labels.
func (c *codeSet) label(reason string) string {
	if code, ok := strings.CutPrefix(reason, upstreamPrefix); !ok || !pgwire.IsSQLState(code) {
		return reason
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[reason] {
		return reason
	}
	if len(c.seen) >= maxUpstreamCodes {
		return upstreamPrefix + "other"
	}
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	c.seen[reason] = true
	return reason
}

// The results rdsproxy_cancel_requests_total counts (forwardCancel,
// cancelOrphaned, sendCancel).
const (
	cancelForwarded     = "forwarded"
	cancelForwardedIdle = "forwarded-idle"
	cancelOrphaned      = "orphaned"
	cancelDropped       = "dropped"
	cancelFailed        = "failed"
)

var cancelResults = []string{cancelForwarded, cancelForwardedIdle, cancelOrphaned, cancelDropped, cancelFailed}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rdsproxy_sessions_active", Help: "Sessions being relayed now."}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_sessions_total", Help: "Sessions by target and outcome (ok, aborted, shutdown, revoked, refused, refused-upstream, failed)."},
			[]string{"target", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_relayed_bytes_total", Help: "Bytes relayed after startup, by target and direction (to_client, from_client)."},
			[]string{"target", "direction"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_auth_failures_total", Help: "Sessions refused before or during authentication, by reason."},
			[]string{"reason"}),
		dialSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rdsproxy_upstream_dial_seconds", Help: "Time to open TCP connections to databases.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		tlsSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rdsproxy_upstream_tls_seconds", Help: "Time for TLS handshakes with databases.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_cancel_requests_total", Help: "Cancel requests by result: forwarded (a client's), forwarded-idle (a client's, for a session whose database had answered everything, which PostgreSQL ignores), orphaned (sent for a client that left without a Terminate), dropped (unknown key), failed."},
			[]string{"result"}),
		droppedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rdsproxy_dropped_after_cancel_bytes_total", Help: "Bytes of rows and notices dropped because the database answered a client's cancel (the audit's dropped_after_cancel)."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_connections_refused_total",
			Help: "Connections ended before relaying, by reason (evicted, startup-timeout, too-many-sessions, auth-throttled, tls-required, unknown-target, token-*, upstream-<SQLSTATE>, the first 64 distinct SQLSTATEs and then upstream-other, …)."},
			[]string{"reason"}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rdsproxy_log_lines_suppressed_total", Help: "Audit lines of refused connections held back by the log rate limit."}),
	}
	for _, result := range cancelResults {
		m.cancels.WithLabelValues(result) // at 0 from the start: a rate over them works before the first cancel
	}
	m.identityChecks, m.stsSeconds = newIdentityMetrics()
	reg.MustRegister(m.identityChecks, m.stsSeconds)
	reg.MustRegister(m.sessionsActive, m.sessions, m.bytes, m.authFailures, m.dialSeconds, m.tlsSeconds, m.cancels,
		m.droppedBytes, m.refusals, m.suppressed)
	return m
}

// The methods below are nil-safe so a Server without metrics needs no checks.

func (m *Metrics) sessionStarted() {
	if m != nil {
		m.sessionsActive.Inc()
	}
}

func (m *Metrics) sessionEnded(target string, o outcome, reason string, toClient, fromClient int64, authFailure bool) {
	if m == nil {
		return
	}
	m.sessions.WithLabelValues(target, string(o)).Inc()
	reason = m.upstreamCodes.label(reason)
	if reason != "" {
		m.refusals.WithLabelValues(reason).Inc()
	}
	if o.relayed() {
		m.sessionsActive.Dec()
		m.bytes.WithLabelValues(target, "to_client").Add(float64(toClient))
		m.bytes.WithLabelValues(target, "from_client").Add(float64(fromClient))
	}
	if authFailure {
		m.authFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) observeDial(d time.Duration) {
	if m != nil {
		m.dialSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) observeTLS(d time.Duration) {
	if m != nil {
		m.tlsSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) cancel(result string) {
	if m != nil {
		m.cancels.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) droppedAfterCancel(n int64) {
	if m != nil && n > 0 {
		m.droppedBytes.Add(float64(n))
	}
}

// startupFailed counts a connection that ended before its StartupMessage.
func (m *Metrics) startupFailed(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) logSuppressed() {
	if m != nil {
		m.suppressed.Inc()
	}
}
