package server

import (
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// AuthFailureLimit bounds failed upstream logins. The pre-check cannot
// verify a token's signature (only RDS can), so a well-formed token with
// a made-up signature costs an upstream dial, a TLS handshake and an IAM
// login. Each failure RDS reports is charged to the access key id the
// token names, from that source address, and to the source address;
// while either budget is empty, further logins are refused before any
// dial. The key's budget is kept per source so that someone who knows a
// victim's access key id cannot lock the victim out from elsewhere.
type AuthFailureLimit struct {
	// PerKey: failures allowed in a burst per access key id and source (default 10),
	// refilled at PerKeyRate per second (default 1/6: ten a minute).
	PerKey     int
	PerKeyRate float64
	// PerSource: the same per client address (default 30, refilled at 2
	// per second). Behind SSM and Kubernetes every client shares one
	// address, so this one is generous.
	PerSource     int
	PerSourceRate float64
	// MaxTracked bounds the keys and addresses remembered (default 10000);
	// entries whose budget is full again are forgotten first.
	MaxTracked int
}

// withDefaults returns l with every zero field set to its default.
func (l AuthFailureLimit) withDefaults() AuthFailureLimit {
	setDefault(&l.PerKey, 10)
	setDefault(&l.PerKeyRate, 1.0/6)
	setDefault(&l.PerSource, 30)
	setDefault(&l.PerSourceRate, 2)
	setDefault(&l.MaxTracked, 10000)
	return l
}

// failureBudgets is one AuthFailureLimit's state.
type failureBudgets struct {
	keys, sources budgets
}

func newFailureBudgets(l AuthFailureLimit) *failureBudgets {
	return &failureBudgets{
		keys:    budgets{burst: l.PerKey, rate: rate.Limit(l.PerKeyRate), max: l.MaxTracked, m: map[string]*rate.Limiter{}},
		sources: budgets{burst: l.PerSource, rate: rate.Limit(l.PerSourceRate), max: l.MaxTracked, m: map[string]*rate.Limiter{}},
	}
}

// check reports which budget is empty ("access key" or "address") and
// how long until it allows one more try; "" when both allow a login.
func (f *failureBudgets) check(keyID, src string, now time.Time) (string, time.Duration) {
	if wait := f.keys.wait(keyOf(keyID, src), now); wait > 0 {
		return "access key", wait
	}
	if wait := f.sources.wait(src, now); wait > 0 {
		return "address", wait
	}
	return "", 0
}

// fail charges one failed login to keyID and src.
func (f *failureBudgets) fail(keyID, src string, now time.Time) {
	f.keys.take(keyOf(keyID, src), now)
	f.sources.take(src, now)
}

// keyOf names an access key's budget at one source; "" for no key.
func keyOf(keyID, src string) string {
	if keyID == "" {
		return ""
	}
	return src + " " + keyID
}

// budgets is a bounded map of token buckets that only failures drain.
type budgets struct {
	burst int
	rate  rate.Limit
	max   int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (b *budgets) wait(key string, now time.Time) time.Duration {
	if key == "" { // a passthrough login names no access key
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.m[key]
	if l == nil || l.TokensAt(now) >= 1 {
		return 0
	}
	return time.Duration((1 - l.TokensAt(now)) / float64(b.rate) * float64(time.Second))
}

func (b *budgets) take(key string, now time.Time) {
	if key == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.m[key]
	if l == nil {
		if len(b.m) >= b.max {
			b.forgetFull(now)
		}
		if len(b.m) >= b.max { // every tracked key is failing: track no more
			return
		}
		l = rate.NewLimiter(b.rate, b.burst)
		b.m[key] = l
	}
	l.AllowN(now, 1)
}

// forgetFull drops the entries whose budget has refilled.
func (b *budgets) forgetFull(now time.Time) {
	for k, l := range b.m {
		if l.TokensAt(now) >= float64(b.burst) {
			delete(b.m, k)
		}
	}
}

// logBudget lets through a burst of log lines and then a steady rate,
// counting what it holds back so that the next line can say so.
type logBudget struct {
	mu         sync.Mutex
	lim        *rate.Limiter
	suppressed int64
}

func newLogBudget(perSecond float64, burst int) *logBudget {
	return &logBudget{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// allow reports whether a line may be written now and, if so, how many
// were held back since the last one.
func (l *logBudget) allow(now time.Time) (ok bool, suppressed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lim.AllowN(now, 1) {
		l.suppressed++
		return false, 0
	}
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// maxLogField bounds what a client-chosen value (user, database,
// application_name) takes in a log line.
const maxLogField = 64

// clip shortens s to maxLogField bytes on a rune boundary and says how
// much was cut.
func clip(s string) string { return clipTo(s, maxLogField) }

// maxLogMessage bounds a refusal's message in the audit line.
const maxLogMessage = 300

// clipTo shortens s to n bytes on a rune boundary and says how long it was.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}
