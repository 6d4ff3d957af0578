package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// logRecorder is a slog.Handler that keeps "LEVEL message" lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, rec.Level.String()+" "+rec.Message)
	return nil
}

// take returns the lines logged since the last take.
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lines
	r.lines = nil
	return l
}

// fakeRDS is a Fetch whose answer the test sets.
type fakeRDS struct {
	mu    sync.Mutex
	dbs   []Database
	err   error
	calls int
}

func (f *fakeRDS) set(dbs []Database, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dbs, f.err = dbs, err
}

func (f *fakeRDS) Fetch(context.Context) ([]Database, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.dbs, f.err
}

var errThrottling = fmt.Errorf("describe rds instances in r1: %w",
	&smithy.OperationError{ServiceID: "RDS", OperationName: "DescribeDBInstances",
		Err: &smithy.GenericAPIError{Code: "Throttling", Message: "Rate exceeded"}})

func newTestWatcher(t *testing.T, f *fakeRDS, mod func(*WatcherConfig)) (*Watcher, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	cfg := WatcherConfig{
		Fetch:  f.Fetch,
		Logger: slog.New(rec),
		Now:    func() time.Time { return testTime },
		Rand:   func() float64 { return 0.5 }, // no jitter
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := NewWatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w, rec
}

func TestWatcherWait(t *testing.T) {
	c := WatcherConfig{Interval: time.Minute, MinBackoff: time.Second, ThrottleBackoff: 10 * time.Second,
		MaxBackoff: 100 * time.Second}
	tests := []struct {
		failures  int
		throttled bool
		want      time.Duration
	}{
		{0, false, time.Minute},
		{0, true, time.Minute},
		{1, false, time.Second},
		{2, false, 2 * time.Second},
		{3, false, 4 * time.Second},
		{7, false, 64 * time.Second},
		{8, false, 100 * time.Second},
		{1000, false, 100 * time.Second},
		{1, true, 10 * time.Second},
		{2, true, 20 * time.Second},
		{4, true, 80 * time.Second},
		{5, true, 100 * time.Second},
	}
	for _, tt := range tests {
		if got := c.wait(tt.failures, tt.throttled); got != tt.want {
			t.Errorf("wait(%d, %v) = %v, want %v", tt.failures, tt.throttled, got, tt.want)
		}
	}
}

func TestWatcherJitter(t *testing.T) {
	for _, tt := range []struct {
		r    float64
		want time.Duration
	}{{0, 90 * time.Second}, {0.5, 100 * time.Second}, {0.75, 105 * time.Second}} {
		c := WatcherConfig{Jitter: 0.1, Rand: func() float64 { return tt.r }}
		if got := c.jitter(100 * time.Second); got != tt.want {
			t.Errorf("jitter(100s) with rand %v = %v, want %v", tt.r, got, tt.want)
		}
	}
}

func TestWatcherConfigValidate(t *testing.T) {
	for _, c := range []WatcherConfig{
		{Jitter: 1},
		{Jitter: -0.1},
		{Interval: -time.Second},
		{Interval: time.Millisecond}, // a refresh-interval of 1ms hammered the RDS API
		{Interval: MinInterval - time.Nanosecond},
		{MinBackoff: time.Hour},
		{ThrottleBackoff: time.Hour},
		{Policy: Policy{Rules: Rules{Deny: []Rule{{}}}}},
	} {
		if _, err := NewWatcher(c); err == nil {
			t.Errorf("NewWatcher(%+v) = nil error", c)
		}
	}
}

func TestIsThrottle(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{errThrottling, true},
		{&smithy.GenericAPIError{Code: "ThrottlingException"}, true},
		{fmt.Errorf("x: %w", &smithy.GenericAPIError{Code: "RequestLimitExceeded"}), true},
		{&smithy.GenericAPIError{Code: "AccessDenied"}, false},
		{errors.New("Throttling"), false},
		{nil, false},
	} {
		if got := IsThrottle(tt.err); got != tt.want {
			t.Errorf("IsThrottle(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestWatcherFailureStreak: a failing refresh keeps the snapshot, is
// logged once per streak, backs off, and recovers.
func TestWatcherFailureStreak(t *testing.T) {
	f := &fakeRDS{}
	w, rec := newTestWatcher(t, f, func(c *WatcherConfig) {
		c.MinBackoff, c.ThrottleBackoff, c.MaxBackoff = time.Second, 30*time.Second, 10*time.Minute
	})
	if w.Ready() || w.Current() != nil || w.NextDelay() != 0 {
		t.Fatal("watcher ready before its first refresh")
	}
	f.set([]Database{inst("r1", "a", optIn)}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := w.Current()
	if !w.Ready() || first.Len() != 1 {
		t.Fatalf("after first refresh: ready=%v snapshot=%v", w.Ready(), first)
	}
	if diff := cmp.Diff([]string{"INFO discovery snapshot loaded"}, rec.take()); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
	if got := w.NextDelay(); got != DefaultInterval {
		t.Errorf("delay after success = %v, want %v", got, DefaultInterval)
	}

	boom := errors.New("connection refused")
	f.set(nil, boom)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if err := w.Refresh(t.Context()); !errors.Is(err, boom) {
			t.Fatalf("refresh %d: err = %v, want %v", i, err, boom)
		}
		if w.Current() != first {
			t.Fatalf("refresh %d replaced the snapshot after a failure", i)
		}
		if got := w.NextDelay(); got != want {
			t.Errorf("delay after %d failures = %v, want %v", i+1, got, want)
		}
	}
	st := w.Status()
	if st.ConsecutiveFailures != 3 || st.LastError == "" || st.Throttled || !st.LastSuccess.Equal(testTime) || st.Targets != 1 {
		t.Errorf("status = %+v", st)
	}
	f.set(nil, errThrottling)
	if err := w.Refresh(t.Context()); !IsThrottle(err) {
		t.Fatalf("err = %v, want throttling", err)
	}
	if got, want := w.NextDelay(), 8*30*time.Second; got != want {
		t.Errorf("delay after 4 failures, the last throttled = %v, want %v", got, want)
	}
	if !w.Status().Throttled {
		t.Error("status does not say throttled")
	}
	if diff := cmp.Diff([]string{"WARN discovery refresh failed; serving the last snapshot until a refresh succeeds; " +
		"check the server's AWS credentials and its rds:DescribeDBInstances and rds:DescribeDBClusters permissions"},
		rec.take()); diff != "" {
		t.Errorf("logs of a four-failure streak (-want +got):\n%s", diff)
	}

	f.set([]Database{inst("r1", "a", optIn), inst("r1", "b", optIn)}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"INFO discovery refresh recovered", "INFO discovery targets changed"},
		rec.take()); diff != "" {
		t.Errorf("logs of the recovery (-want +got):\n%s", diff)
	}
	if st := w.Status(); st.ConsecutiveFailures != 0 || st.LastError != "" || st.Targets != 2 {
		t.Errorf("status after recovery = %+v", st)
	}

	f.set(nil, boom) // a new streak is logged again
	_ = w.Refresh(t.Context())
	_ = w.Refresh(t.Context())
	if got := rec.take(); len(got) != 1 {
		t.Errorf("second streak logged %q, want one line", got)
	}
}

func TestWatcherCanceledRefreshIsNotAFailure(t *testing.T) {
	f := &fakeRDS{}
	w, rec := newTestWatcher(t, f, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f.set(nil, context.Canceled)
	if err := w.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded")
	}
	if st := w.Status(); st.ConsecutiveFailures != 0 || !st.LastAttempt.IsZero() {
		t.Errorf("status = %+v, want untouched", st)
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("logged %q", got)
	}
}

func TestWatcherWarningsLoggedOnce(t *testing.T) {
	f := &fakeRDS{}
	w, rec := newTestWatcher(t, f, nil)
	bad := inst("r1", "a", map[string]string{TagEnabled: "true", TagLocalPort: "x"})
	f.set([]Database{bad}, nil)
	for range 3 {
		if err := w.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"INFO discovery snapshot loaded",
		`WARN discovery: tag rdsproxy:local-port="x" is not a port number; ignored`}
	if diff := cmp.Diff(want, rec.take()); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
}

// TestWatcherSetConfig: new rules and static targets apply at the next
// refresh, with no new watcher.
func TestWatcherSetConfig(t *testing.T) {
	f := &fakeRDS{}
	f.set([]Database{inst("r1", "a", optIn), inst("r1", "b", map[string]string{"team": "x"})}, nil)
	w, _ := newTestWatcher(t, f, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a"}, names(w.Current().Targets())); diff != "" {
		t.Errorf("default rules (-want +got):\n%s", diff)
	}
	static := Target{Name: "a", Endpoint: "pg.local:5432", Auth: AuthPassthrough, TLS: TLSDisable, Source: SourceStatic}
	rules, err := ParseRules([]string{"team"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetConfig(Policy{Rules: rules, Static: []Target{static, static}}); err == nil {
		t.Error("SetConfig accepted duplicate static targets")
	}
	if err := w.SetConfig(Policy{Rules: rules, Static: []Target{static}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, names(w.Current().Targets())); diff != "" {
		t.Errorf("after SetConfig (-want +got):\n%s", diff)
	}
	if got, _ := w.Current().Lookup("a"); got.Source != SourceStatic {
		t.Errorf("target a = %+v, want the static one", got)
	}
}

func TestWatcherStaticOnly(t *testing.T) {
	static := Target{Name: "pg", Endpoint: "127.0.0.1:5432", Auth: AuthPassthrough, TLS: TLSDisable, Source: SourceStatic}
	w, err := NewWatcher(WatcherConfig{Policy: Policy{Static: []Target{static}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Target{static}, w.Current().Targets()); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
}

// TestWatcherRun drives Run through its timer hook: it refreshes at once,
// waits Interval after a success and backs off after failures, and stops
// when its context ends.
func TestWatcherRun(t *testing.T) {
	type wait struct {
		d    time.Duration
		fire chan time.Time
	}
	waits := make(chan wait)
	f := &fakeRDS{}
	f.set([]Database{inst("r1", "a", optIn)}, nil)
	w, _ := newTestWatcher(t, f, func(c *WatcherConfig) {
		c.Interval, c.MinBackoff = time.Minute, time.Second
		c.After = func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			waits <- wait{d, ch}
			return ch
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	expect := func(want time.Duration) chan time.Time {
		t.Helper()
		got := <-waits
		if got.d != want {
			t.Errorf("Run waits %v, want %v", got.d, want)
		}
		return got.fire
	}
	fire := expect(time.Minute) // the first refresh ran at once and succeeded
	if !w.Ready() {
		t.Error("not ready after the first wait began")
	}
	f.set(nil, errors.New("down"))
	fire <- testTime                // second refresh fails
	expect(time.Second) <- testTime // third fails
	fire = expect(2 * time.Second)  // doubled
	f.set([]Database{inst("r1", "a", optIn)}, nil)
	fire <- testTime // fourth succeeds
	expect(time.Minute)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if f.calls != 4 {
		t.Errorf("Fetch called %d times, want 4", f.calls)
	}
}

// TestSnapshotImmutable: a snapshot handed out stays as it was when a
// later refresh swaps in another.
func TestSnapshotImmutable(t *testing.T) {
	f := &fakeRDS{}
	a := inst("r1", "a", map[string]string{TagEnabled: "true", TagUsers: "alice"})
	f.set([]Database{a}, nil)
	w, _ := newTestWatcher(t, f, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := w.Current()
	before := append([]Target(nil), old.Targets()...)
	before[0].Users = append([]string(nil), before[0].Users...)

	a.Tags = map[string]string{TagEnabled: "true", TagUsers: "bob", TagReadOnly: "true"}
	a.Endpoint = "moved.example:5432"
	f.set([]Database{a, inst("r1", "b", optIn)}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w.Current() == old || w.Current().Len() != 2 {
		t.Fatal("refresh did not swap in a new snapshot")
	}
	if diff := cmp.Diff(before, old.Targets()); diff != "" {
		t.Errorf("old snapshot changed (-before +after):\n%s", diff)
	}
	if _, ok := old.Lookup("b"); ok {
		t.Error("old snapshot finds a target added later")
	}
	if _, ok := old.Lookup("moved.example:5432"); ok {
		t.Error("old snapshot finds the new endpoint")
	}
	if got, ok := w.Current().Lookup("MOVED.example"); !ok || got.Name != "a" {
		t.Errorf("new snapshot lookup by endpoint host = %v, %v", got, ok)
	}
}

func TestSnapshotLookup(t *testing.T) {
	dbs := []Database{inst("r1", "a", optIn), cluster("r1", "c", optIn)}
	targets, _ := Policy{}.Targets(dbs)
	s, err := NewSnapshot(targets, testTime)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ ref, want string }{
		{"a", "a"},
		{"c", "c"},
		{"c-ro", "c-ro"},
		{dbs[0].Endpoint, "a"},
		{"A.X.R1.RDS.AMAZONAWS.COM:5432", "a"},
		{"a.x.r1.rds.amazonaws.com", "a"},
		{dbs[1].ReaderEndpoint, "c-ro"},
		{"a.x.r1.rds.amazonaws.com:5433", ""},
		{"A", ""},
		{"nope", ""},
	} {
		got, ok := s.Lookup(tt.ref)
		if (tt.want == "") == ok || (ok && got.Name != tt.want) {
			t.Errorf("Lookup(%q) = %v, %v, want %q", tt.ref, got, ok, tt.want)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	var dbs []Database
	for i := range 1000 {
		dbs = append(dbs, inst("r1", fmt.Sprintf("db-%04d", i), optIn))
	}
	targets, _ := Policy{}.Targets(dbs)
	s, err := NewSnapshot(targets, testTime)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, ref string }{
		{"name", "db-0500"},
		{"endpoint", dbs[500].Endpoint},
		{"miss", "nope"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.Lookup(bc.ref); ok != (bc.name != "miss") {
					b.Fatal("unexpected lookup result")
				}
			}
		})
	}
}

// TestWatcherCopiesConfig: changing the caller's slices after SetConfig
// changes nothing the watcher serves.
func TestWatcherCopiesConfig(t *testing.T) {
	static := []Target{{Name: "pg", Endpoint: "127.0.0.1:5432", Auth: AuthPassthrough, TLS: TLSDisable,
		Source: SourceStatic, Users: []string{"app"}}}
	w, _ := newTestWatcher(t, &fakeRDS{}, nil)
	if err := w.SetConfig(Policy{Static: static}); err != nil {
		t.Fatal(err)
	}
	static[0].Name, static[0].Users[0] = "changed", "root"
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, ok := w.Current().Lookup("pg")
	if !ok || got.Users[0] != "app" {
		t.Errorf("Lookup(pg) = %+v, %v; the caller's later change leaked in", got, ok)
	}
}

// TestWatcherConcurrentUse: refreshes (Run's and a SIGHUP's), SetConfig
// and lookups may overlap; -race checks the rest.
func TestWatcherConcurrentUse(t *testing.T) {
	f := &fakeRDS{}
	f.set([]Database{inst("r1", "a", optIn), inst("r1", "b", optIn)}, nil)
	w, _ := newTestWatcher(t, f, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 50 {
				switch i {
				case 0:
					if err := w.SetConfig(Policy{Regions: []string{"r1"}}); err != nil {
						t.Error(err)
					}
				case 1:
					if s := w.Current(); s.Len() != 2 {
						t.Errorf("snapshot has %d targets", s.Len())
					}
					_ = w.Status()
				default:
					if err := w.Refresh(t.Context()); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if got := w.Current(); got.Len() != 2 {
		t.Errorf("final snapshot has %d targets", got.Len())
	}
}

// TestWatcherSaysWhyTargetsLeft: the log line of a change names why each
// removed target went, and the snapshot finds each earlier target's
// database whatever its name is now: served, withheld by the tag rules
// (the operator's decision), withheld for its state, or gone.
func TestWatcherSaysWhyTargetsLeft(t *testing.T) {
	f := &fakeRDS{}
	var logs syncbuf.Buffer
	w, _ := newTestWatcher(t, f, func(c *WatcherConfig) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	all := []Database{inst("r1", "denied", optIn), inst("r1", "stopped", optIn), inst("r1", "noiam", optIn),
		inst("r1", "gone", optIn), cluster("r1", "aurora", optIn), inst("r1", "blue", optIn)}
	f.set(all, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := w.Current()
	denied, stopped, noiam, aurora, blue := all[0], all[1], all[2], all[4], all[5]
	denied.Tags = map[string]string{TagEnabled: "false"}
	stopped.Status = "stopped"
	noiam.IAMAuth = false
	aurora.Tags = nil
	blue.Tags = map[string]string{TagEnabled: "true", TagName: "blue-old"}
	green := inst("r1", "green", map[string]string{TagName: "blue"}) // takes the name, not enabled yet
	f.set([]Database{denied, stopped, noiam, aurora, blue, green}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"aurora (the tag rules)", "aurora-ro (the tag rules)", "denied (the tag rules)",
		"gone (deleted: RDS no longer lists it)", "noiam (IAM database authentication is off)",
		"stopped (status stopped)", "blue (renamed blue-old)"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the change's log line lacks %q:\n%s", want, logs.String())
		}
	}
	snap := w.Current()
	for name, want := range map[string]struct {
		now     string
		byRules bool
		found   bool
	}{
		"denied": {"", true, true}, "aurora-ro": {"", true, true}, "stopped": {"", false, true}, "noiam": {"", false, true},
		"blue": {"blue-old", false, true}, "gone": {"", false, false},
	} {
		old, _ := before.Lookup(name)
		cur, why, ok := snap.Standing(old)
		now := ""
		if cur != nil {
			now = cur.Name
		}
		if now != want.now || why.ByRules != want.byRules || ok != want.found {
			t.Errorf("Standing(%s) = %q, %+v, %v; want %q, rules %v, found %v", name, now, why, ok, want.now, want.byRules, want.found)
		}
	}
}

// Run ends with its ctx even while another refresh (a reload's) hangs in
// an AWS call: the server's exit after its drain does not wait for it.
func TestWatcherRunEndsWhileAReloadHangs(t *testing.T) {
	hung := make(chan struct{})
	w, _ := newTestWatcher(t, &fakeRDS{}, func(c *WatcherConfig) {
		c.Fetch = func(ctx context.Context) ([]Database, error) {
			close(hung)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		c.After = func(time.Duration) <-chan time.Time { return time.After(time.Millisecond) }
	})
	reload, endReload := context.WithCancel(t.Context())
	defer endReload()
	go w.Refresh(reload)
	<-hung
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	time.Sleep(20 * time.Millisecond) // Run's first refresh now waits for the reload's
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still waits for the hung reload after its ctx ended")
	}
}

// snapshotNames is the target names of w's current snapshot.
func snapshotNames(w *Watcher) []string {
	var names []string
	for _, t := range w.Current().Targets() {
		names = append(names, t.Name)
	}
	return names
}

// When one region fails and another answers, what the other says applies
// at once (a database whose tag was removed is no longer served) and the
// failed region's databases stay as last seen; the refresh still counts
// as a failure, with its own warning, until every region answers.
func TestWatcherRegionFailureDoesNotHoldBackOthers(t *testing.T) {
	f := &fakeRDS{}
	w, rec := newTestWatcher(t, f, nil)
	f.set([]Database{inst("r1", "a", optIn), inst("r1", "b", optIn), inst("r2", "c", optIn)}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	rec.take()
	down := &RegionsFailed{Regions: []string{"r2"}, Answered: 1, errs: []error{errors.New("describe rds instances in r2: 403 ExpiredToken")}}
	f.set([]Database{inst("r1", "a", optIn)}, down) // b's tag removed in r1; r2 does not answer
	if err := w.Refresh(t.Context()); !errors.As(err, new(*RegionsFailed)) {
		t.Fatalf("refresh with r2 down: err = %v, want the regions that failed", err)
	}
	if got := snapshotNames(w); !cmp.Equal(got, []string{"a", "c"}) {
		t.Fatalf("targets with r2 down = %v, want a (r1, current) and c (r2, as last seen), not b", got)
	}
	if st := w.Status(); st.ConsecutiveFailures != 1 || !strings.Contains(st.LastError, "r2") || st.Targets != 2 {
		t.Errorf("status = %+v", st)
	}
	logs := rec.take()
	if len(logs) != 2 || !strings.HasPrefix(logs[0], "WARN discovery refresh failed in some regions") || logs[1] != "INFO discovery targets changed" {
		t.Errorf("logs = %q, want the region failure and the change", logs)
	}
	f.set(nil, down) // r1 now answers with nothing: a goes too, c stays
	_ = w.Refresh(t.Context())
	if got := snapshotNames(w); !cmp.Equal(got, []string{"c"}) {
		t.Fatalf("targets = %v, want c alone", got)
	}
	f.set([]Database{inst("r2", "d", optIn)}, nil) // r2 back: c was deleted meanwhile
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := snapshotNames(w); !cmp.Equal(got, []string{"d"}) || w.Status().ConsecutiveFailures != 0 {
		t.Fatalf("after r2 answers: targets %v, status %+v", got, w.Status())
	}
}

// Before the first snapshot, a region that fails fails the refresh: no
// snapshot of the other regions alone, and the server stays unready.
func TestWatcherFirstRefreshNeedsEveryRegion(t *testing.T) {
	f := &fakeRDS{}
	w, _ := newTestWatcher(t, f, nil)
	f.set([]Database{inst("r1", "a", optIn)}, &RegionsFailed{Regions: []string{"r2"}, Answered: 1, errs: []error{errors.New("r2 down")}})
	if err := w.Refresh(t.Context()); err == nil || w.Ready() || w.Current() != nil {
		t.Fatalf("first refresh with r2 down: err %v, ready %v", err, w.Ready())
	}
}

// A region whose API hangs until the refresh times out holds back no more
// than one that fails at once: the regions that answered still apply.
func TestWatcherRegionThatHangs(t *testing.T) {
	calls := 0 // the refreshes run one after the other
	fetch := func(ctx context.Context) ([]Database, error) {
		if calls++; calls == 1 {
			return []Database{inst("r1", "a", optIn), inst("r1", "b", optIn), inst("r2", "c", optIn)}, nil
		}
		<-ctx.Done() // r2 answers nothing until the refresh's time is up
		return []Database{inst("r1", "a", optIn)}, &RegionsFailed{Regions: []string{"r2"}, Answered: 1,
			errs: []error{fmt.Errorf("describe rds instances in r2: %w", ctx.Err())}}
	}
	w, _ := newTestWatcher(t, &fakeRDS{}, func(c *WatcherConfig) { c.Fetch, c.RefreshTimeout = fetch, 50*time.Millisecond })
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(t.Context()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("refresh with r2 hanging: %v, want its timeout", err)
	}
	if got := snapshotNames(w); !cmp.Equal(got, []string{"a", "c"}) {
		t.Fatalf("targets with r2 hanging = %v, want a and c (b's tag was removed in r1)", got)
	}
}

// However long one region fails, the regions that answer are refreshed
// at least every Interval (a revocation there waits no longer than it
// would without the outage), and the log says again which regions fail
// when that changes.
func TestWatcherPartialFailuresKeepTheInterval(t *testing.T) {
	f := &fakeRDS{}
	w, rec := newTestWatcher(t, f, nil)
	f.set([]Database{inst("r1", "a", optIn), inst("r2", "b", optIn), inst("r3", "c", optIn)}, nil)
	if err := w.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	rec.take()
	down := func(region string) error {
		return &RegionsFailed{Regions: []string{region}, Answered: 2, errs: []error{errors.New(region + " down")}}
	}
	f.set([]Database{inst("r1", "a", optIn), inst("r3", "c", optIn)}, down("r2"))
	for i := range 12 { // past the backoff's 5-minute cap
		_ = w.Refresh(t.Context())
		if got := w.NextDelay(); got > DefaultInterval {
			t.Fatalf("after %d partial failures the next refresh is in %v, past the interval (%v)", i+1, got, DefaultInterval)
		}
	}
	if st := w.Status(); !cmp.Equal(st.FailedRegions, []string{"r2"}) || st.ConsecutiveFailures != 12 {
		t.Errorf("status = %+v, want r2 failed 12 times", st)
	}
	if logs := rec.take(); len(logs) != 1 {
		t.Errorf("12 failures of r2 logged %q, want one line", logs)
	}
	f.set([]Database{inst("r1", "a", optIn), inst("r2", "b", optIn)}, down("r3")) // r2 back, r3 down
	_ = w.Refresh(t.Context())
	if logs := rec.take(); len(logs) != 1 || !strings.HasPrefix(logs[0], "WARN discovery refresh failed in some regions") {
		t.Errorf("r3 failing after r2 logged %q, want a new warning", logs)
	}
	f.set(nil, errors.New("every region down")) // a full failure: the backoff alone
	_ = w.Refresh(t.Context())
	if st := w.Status(); st.FailedRegions != nil || w.NextDelay() <= DefaultInterval {
		t.Errorf("after a full failure: status %+v, next refresh in %v; want no failed regions named and the backoff (5 minutes)", st, w.NextDelay())
	}
}
