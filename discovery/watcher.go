package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// Watcher defaults.
const (
	DefaultInterval        = 60 * time.Second
	MinInterval            = 10 * time.Second // see Validate
	DefaultJitter          = 0.1
	DefaultMinBackoff      = 1 * time.Second
	DefaultThrottleBackoff = 15 * time.Second
	DefaultMaxBackoff      = 5 * time.Minute
	DefaultRefreshTimeout  = 2 * time.Minute
)

// WatcherConfig configures a Watcher. Zero durations take the defaults.
type WatcherConfig struct {
	// Fetch lists the databases, typically (*Source).Fetch. Nil serves
	// the static targets of Policy only.
	Fetch func(ctx context.Context) ([]Database, error)
	// Policy admits and names the databases and holds the static targets.
	Policy Policy
	// Interval between successful refreshes.
	Interval time.Duration
	// Jitter spreads every wait by ±Jitter·wait, so that many servers do
	// not call AWS in step. 0 means DefaultJitter; it must be below 1.
	Jitter float64
	// After a failed refresh the wait is MinBackoff, doubling with each
	// further failure up to MaxBackoff. A throttling error (API error code
	// Throttling, ThrottlingException, RequestLimitExceeded, … as the SDK's
	// retry.DefaultThrottleErrorCodes lists) starts at ThrottleBackoff
	// instead.
	MinBackoff, ThrottleBackoff, MaxBackoff time.Duration
	// RefreshTimeout bounds one refresh.
	RefreshTimeout time.Duration
	// Logger receives failure streaks, recoveries and snapshot changes.
	// Nil discards.
	Logger *slog.Logger

	// Test hooks: the clock, the timer Run waits on, and a uniform random
	// number in [0, 1) for the jitter.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	Rand  func() float64
}

// withDefaults returns c with every zero field set to its default.
func (c WatcherConfig) withDefaults() WatcherConfig {
	setDefault(&c.Interval, DefaultInterval)
	setDefault(&c.MinBackoff, DefaultMinBackoff)
	setDefault(&c.ThrottleBackoff, DefaultThrottleBackoff)
	setDefault(&c.MaxBackoff, DefaultMaxBackoff)
	setDefault(&c.RefreshTimeout, DefaultRefreshTimeout)
	setDefault(&c.Jitter, DefaultJitter)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// ConfigError is a WatcherConfig field the watcher cannot use. Field is
// the Go field's name, so that the caller can name its own flag or
// setting when it reports the error.
type ConfigError struct {
	Field   string
	Problem string
}

func (e *ConfigError) Error() string { return "discovery: " + e.Field + ": " + e.Problem }

// Validate reports the first field the watcher cannot use, reading zero
// fields as their defaults, then checks the policy. It changes nothing.
func (c WatcherConfig) Validate() error {
	c = c.withDefaults()
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Interval", c.Interval}, {"MinBackoff", c.MinBackoff}, {"ThrottleBackoff", c.ThrottleBackoff},
		{"MaxBackoff", c.MaxBackoff}, {"RefreshTimeout", c.RefreshTimeout}} {
		if f.d < 0 {
			return &ConfigError{f.name, fmt.Sprintf("%s is negative", f.d)}
		}
	}
	switch {
	case c.Interval < MinInterval:
		return &ConfigError{"Interval", fmt.Sprintf("%s is below %s: each refresh lists every region's databases, and AWS throttles callers that list more often", c.Interval, MinInterval)}
	case c.Jitter < 0 || c.Jitter >= 1:
		return &ConfigError{"Jitter", fmt.Sprintf("%v is outside [0, 1)", c.Jitter)}
	case c.MinBackoff > c.MaxBackoff || c.ThrottleBackoff > c.MaxBackoff:
		return &ConfigError{"MaxBackoff", fmt.Sprintf("%v is below the min backoff %v or the throttle backoff %v",
			c.MaxBackoff, c.MinBackoff, c.ThrottleBackoff)}
	}
	return c.Policy.Validate()
}

// Status describes the refreshes so far, for metrics and readiness.
type Status struct {
	LastAttempt  time.Time
	LastSuccess  time.Time
	LastDuration time.Duration
	// ConsecutiveFailures counts failed refreshes since the last success.
	ConsecutiveFailures int
	// LastError is the text of the latest failure; empty after a success.
	LastError string
	// Throttled is whether the latest failure was AWS throttling.
	Throttled bool
	// FailedRegions, after a refresh in which only some regions failed,
	// names them: the snapshot holds their databases as last seen and the
	// others' as they are now.
	FailedRegions []string
	// Targets is the number of targets in the current snapshot.
	Targets int
}

// Watcher keeps the current Snapshot up to date. Current is lock-free;
// refreshes are serialised, so Run and an explicit Refresh (SIGHUP) may
// overlap safely.
type Watcher struct {
	cfg     WatcherConfig // immutable after NewWatcher, except Policy
	current atomic.Pointer[Snapshot]

	refreshing chan struct{} // holds a token for a whole refresh; waited for with ctx

	// fetched is the databases of the current snapshot (Fetch's, with a
	// failed region's as last seen); only a refresh, holding refreshing,
	// uses it.
	fetched []Database

	mu     sync.Mutex // guards the fields below
	policy Policy
	status Status
	warned map[Warning]bool // warnings logged by the last successful refresh
}

// NewWatcher validates cfg. It does not refresh: call Refresh or Run.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Policy = cfg.Policy.clone()
	return &Watcher{cfg: cfg, policy: cfg.Policy, refreshing: make(chan struct{}, 1)}, nil
}

// Current is the latest good snapshot, nil before the first success.
func (w *Watcher) Current() *Snapshot { return w.current.Load() }

// Ready reports whether a snapshot has been loaded.
func (w *Watcher) Ready() bool { return w.Current() != nil }

// Status returns a copy of the refresh status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// SetConfig replaces the rules, region order and static targets; the next
// refresh uses them (call Refresh to apply them now).
func (w *Watcher) SetConfig(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	p = p.clone()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.policy = p
	return nil
}

// Run refreshes at once (unless Refresh was called before), then every
// Interval, backing off after failures, until ctx ends; it then returns
// nil. Failures are in Status and the log.
func (w *Watcher) Run(ctx context.Context) error {
	for {
		if d := w.NextDelay(); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.cfg.After(d):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		_ = w.Refresh(ctx) // recorded in Status, logged once per failure streak
	}
}

// Refresh fetches the databases and swaps in a new snapshot. On failure
// the previous snapshot stays current, the failure is counted in Status,
// and only the first failure of a streak is logged (at Warn; the recovery
// at Info), so callers need not log the returned error again. One that
// waits for another refresh to end gives up when ctx ends: a server's
// drain that has ended must not wait for a reload's AWS call (up to
// RefreshTimeout).
func (w *Watcher) Refresh(ctx context.Context) error {
	select {
	case w.refreshing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-w.refreshing }()
	w.mu.Lock()
	policy := w.policy
	w.mu.Unlock()

	start := w.cfg.Now()
	dbs, usable, err := w.fetch(ctx)
	if err != nil && ctx.Err() != nil {
		return err // shutting down: not a discovery failure
	}
	var snap *Snapshot
	var warns []Warning
	if usable {
		var buildErr error
		if snap, warns, buildErr = build(policy, dbs, start); buildErr != nil {
			err = buildErr
		} else {
			w.fetched = dbs
		}
	}
	w.record(start, snap, warns, err)
	return err
}

// fetch lists the databases (none without Fetch); usable says whether a
// snapshot may be made of them. When some regions failed and there is a
// snapshot, it returns the others' databases with the failed regions' as
// last seen, usable, and the *RegionsFailed: a revocation in a region
// that answers applies at once, also when another region's API hangs
// until RefreshTimeout. Before the first snapshot a failed region
// fails the refresh: a partial first list would serve without that
// region's databases, and the server would report ready.
func (w *Watcher) fetch(ctx context.Context) (dbs []Database, usable bool, err error) {
	if w.cfg.Fetch == nil {
		return nil, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RefreshTimeout)
	defer cancel()
	dbs, err = w.cfg.Fetch(ctx)
	var failed *RegionsFailed
	switch {
	case err == nil:
		return dbs, true, nil
	case !errors.As(err, &failed) || failed.Answered == 0 || w.current.Load() == nil:
		return nil, false, fmt.Errorf("refresh discovery: %w", err)
	}
	for _, d := range w.fetched {
		if slices.Contains(failed.Regions, d.Region) {
			dbs = append(dbs, d)
		}
	}
	return dbs, true, fmt.Errorf("refresh discovery: %w", err)
}

// build makes the snapshot of what p admits of dbs.
func build(p Policy, dbs []Database, now time.Time) (*Snapshot, []Warning, error) {
	targets, withheld, warns := p.selectTargets(dbs)
	snap, err := NewSnapshot(targets, now)
	if err != nil {
		return nil, nil, fmt.Errorf("refresh discovery: %w", err)
	}
	snap.withheld = withheld
	return snap, warns, nil
}

func (w *Watcher) record(start time.Time, snap *Snapshot, warns []Warning, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &w.status
	st.LastAttempt = start
	st.LastDuration = w.cfg.Now().Sub(start)
	if err != nil {
		w.recordFailure(err, snap != nil)
	} else {
		if st.ConsecutiveFailures > 0 {
			w.cfg.Logger.Info("discovery refresh recovered", "failures", st.ConsecutiveFailures,
				"since", st.LastSuccess)
		}
		st.ConsecutiveFailures, st.LastError, st.Throttled, st.FailedRegions = 0, "", false, nil
		st.LastSuccess = start
	}
	if snap == nil {
		return
	}
	st.Targets = snap.Len()
	old := w.current.Swap(snap)
	w.logChanges(old, snap)
	w.logWarnings(warns)
}

// recordFailure counts a failed refresh in the status and logs the first
// of a streak. partial: the refresh still made a snapshot, of the regions
// that answered and the failed ones' databases as last seen. The caller
// holds mu.
func (w *Watcher) recordFailure(err error, partial bool) {
	log, st := w.cfg.Logger, &w.status
	st.ConsecutiveFailures++
	st.LastError = err.Error()
	st.Throttled = IsThrottle(err)
	var failed *RegionsFailed
	wasPartial := st.FailedRegions
	st.FailedRegions = nil
	if partial && errors.As(err, &failed) {
		st.FailedRegions = slices.Clone(failed.Regions)
	}
	switch {
	case partial && !slices.Equal(st.FailedRegions, wasPartial):
		// A streak's first partial failure, or other regions failing now.
		log.Warn("discovery refresh failed in some regions; their databases are served as last seen until a refresh succeeds, the other regions' are current; "+
			refreshHint(err), "regions", st.FailedRegions, "err", err, "throttled", st.Throttled)
	case st.ConsecutiveFailures > 1:
	case w.current.Load() == nil:
		log.Warn("discovery refresh failed, and there is no earlier snapshot: no database is served until a refresh succeeds; "+
			refreshHint(err), "err", err, "throttled", st.Throttled)
	default:
		log.Warn("discovery refresh failed; serving the last snapshot until a refresh succeeds; "+refreshHint(err),
			"err", err, "throttled", st.Throttled, "targets", st.Targets)
	}
}

// refreshHint says what to check when a refresh failed: where the
// server's AWS credentials come from, when it could not get any (the SDK
// names that step "get identity"); the route to the RDS API, when a
// connection to it failed (refused, reset, or a dial that timed out: a
// route that drops packets); the API's pace, when the refresh ran out of
// time otherwise; else the server's permissions. A dial timeout is a
// context.DeadlineExceeded too, so the connection is looked at first.
func refreshHint(err error) string {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case strings.Contains(err.Error(), "get identity"):
		return "the server got no AWS credentials: check its instance role (or IRSA, or its environment), and that it can reach the instance metadata service or STS"
	case errors.As(err, &opErr) || errors.As(err, &dnsErr):
		return "check that the server can reach the RDS API of each region (a route to the internet through a NAT gateway, or an RDS interface VPC endpoint) and its DNS"
	case errors.Is(err, context.DeadlineExceeded):
		return "the RDS API answered too slowly for the refresh to finish in time: check the route to it and whether it throttles this account"
	}
	return "check the server's AWS credentials and its rds:DescribeDBInstances and rds:DescribeDBClusters permissions"
}

// logChanges logs the first snapshot and any later change of target names.
func (w *Watcher) logChanges(old, cur *Snapshot) {
	if old == nil {
		w.cfg.Logger.Info("discovery snapshot loaded", "targets", cur.Len())
		return
	}
	added, removed := diffNames(old.Targets(), cur.Targets())
	for i, name := range removed {
		removed[i] = name + " (" + whyRemoved(old, cur, name) + ")"
	}
	if len(added)+len(removed) > 0 {
		w.cfg.Logger.Info("discovery targets changed", "targets", cur.Len(),
			"added", added, "removed", removed)
	}
}

// whyRemoved says why target name of old is not in cur.
func whyRemoved(old, cur *Snapshot, name string) string {
	now, why, ok := cur.Standing(old.byName[name])
	switch {
	case now != nil:
		return "renamed " + now.Name
	case ok:
		return why.Reason
	}
	return "deleted: RDS no longer lists it"
}

// logWarnings logs each warning once while it persists.
func (w *Watcher) logWarnings(warns []Warning) {
	next := make(map[Warning]bool, len(warns))
	for _, wn := range warns {
		if !w.warned[wn] {
			w.cfg.Logger.Warn("discovery: "+wn.Message, "region", wn.Region, "identifier", wn.Identifier)
		}
		next[wn] = true
	}
	w.warned = next
}

// diffNames compares two name-sorted target lists.
func diffNames(old, cur []Target) (added, removed []string) {
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(old) && old[i].Name < cur[j].Name):
			removed = append(removed, old[i].Name)
			i++
		case i == len(old) || cur[j].Name < old[i].Name:
			added = append(added, cur[j].Name)
			j++
		default:
			i++
			j++
		}
	}
	return added, removed
}

// NextDelay is how long Run waits before its next refresh, jitter included:
// 0 before the first refresh, Interval after a success, the backoff after
// failures.
func (w *Watcher) NextDelay() time.Duration {
	st := w.Status()
	if st.LastAttempt.IsZero() {
		return 0
	}
	d := w.cfg.wait(st.ConsecutiveFailures, st.Throttled)
	if len(st.FailedRegions) > 0 {
		// The regions that answer are refreshed at least every Interval,
		// however long the others fail: a revocation there waits no longer.
		d = min(d, w.cfg.Interval)
	}
	return w.cfg.jitter(d)
}

// wait is the un-jittered wait after failures consecutive failures (0:
// the last refresh succeeded).
func (c *WatcherConfig) wait(failures int, throttled bool) time.Duration {
	if failures == 0 {
		return c.Interval
	}
	d := c.MinBackoff
	if throttled {
		d = c.ThrottleBackoff
	}
	for range failures - 1 {
		if d >= c.MaxBackoff/2 {
			return c.MaxBackoff
		}
		d *= 2
	}
	return min(d, c.MaxBackoff)
}

func (c *WatcherConfig) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + c.Jitter*(2*c.Rand()-1)))
}

// IsThrottle reports whether err is an AWS throttling error, by its API
// error code (retry.DefaultThrottleErrorCodes), through any wrapping.
func IsThrottle(err error) bool {
	check := retry.ThrottleErrorCode{Codes: retry.DefaultThrottleErrorCodes}
	return err != nil && check.IsErrorThrottle(err) == aws.TrueTernary
}
