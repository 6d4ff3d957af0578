package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newIdentityMetrics makes the caller-identity metrics. Their labels are
// fixed sets: caller ARNs and accounts are not labels, because anyone
// with AWS credentials in any account can prove an identity.
func newIdentityMetrics() (*prometheus.CounterVec, prometheus.Histogram) {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsproxy_identity_checks_total",
			Help: "Caller identity checks by result (verified-cache, verified-sts, identity-challenge (a GET /v1/targets without one: every client's first), identity-missing, identity-malformed, identity-expired, identity-wrong-server, identity-key-mismatch, identity-refused, identity-sts-unreachable)."},
			[]string{"result"}),
		prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rdsproxy_sts_request_seconds", Help: "Time for sts:GetCallerIdentity calls, answered or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
}

func (m *Metrics) identity(result string) {
	if m != nil {
		m.identityChecks.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) observeSTS(d time.Duration) {
	if m != nil {
		m.stsSeconds.Observe(d.Seconds())
	}
}
