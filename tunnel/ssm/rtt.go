package ssm

import "time"

// Retransmission constants shared by the reference plugin and agent
// (docs/ssm-protocol.md §7.4).
const (
	initialRTT     = 100 * time.Millisecond
	initialRTO     = 200 * time.Millisecond
	clockGranule   = 10 * time.Millisecond
	maxRTO         = time.Second
	rttGainShift   = 3 // gain 1/8
	rttVarGainDiv  = 4 // gain 1/4
	rttVarRTOScale = 4
)

// rttEstimator is the RFC 6298-shaped estimator of §7.4. Not safe for
// concurrent use; the Channel guards it with its mutex.
type rttEstimator struct {
	srtt, rttvar, rto time.Duration
	minRTO            time.Duration
}

func newRTTEstimator(minRTO time.Duration) rttEstimator {
	return rttEstimator{srtt: initialRTT, rto: max(initialRTO, minRTO), minRTO: minRTO}
}

// sample feeds one round-trip measurement.
func (e *rttEstimator) sample(r time.Duration) {
	diff := e.srtt - r
	if diff < 0 {
		diff = -diff
	}
	e.rttvar = e.rttvar*3/4 + diff/rttVarGainDiv
	e.srtt = e.srtt - e.srtt>>rttGainShift + r>>rttGainShift
	e.rto = e.srtt + max(clockGranule, rttVarRTOScale*e.rttvar)
	e.rto = min(max(e.rto, e.minRTO), maxRTO)
}

// backoff doubles the RTO after a retransmission timeout (Karn's rule: it
// stays doubled until a message that was not retransmitted is
// acknowledged and gives a valid sample). Without it, when the queue in
// front of the agent grows past the RTO, every message times out, no
// sample is valid, and the RTO never learns the new delay.
func (e *rttEstimator) backoff() {
	e.rto = min(max(e.rto*2, e.minRTO), maxRTO)
}

// timeout is the retransmission timeout for a message already resent n
// times: the RTO doubled per resend, capped at maxRTO.
func (e *rttEstimator) timeout(n int) time.Duration {
	d := e.rto
	for i := 0; i < n && d < maxRTO; i++ {
		d *= 2
	}
	return min(d, maxRTO)
}
