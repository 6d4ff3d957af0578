package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

func startMoto(t testing.TB) *sandbox.Moto {
	t.Helper()
	m, err := sandbox.StartMoto(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// countingRDS counts the requests that reach an RDSAPI.
type countingRDS struct {
	discovery.RDSAPI
	instances, clusters *atomic.Int32
}

func (c countingRDS) DescribeDBInstances(ctx context.Context, in *rds.DescribeDBInstancesInput, opts ...func(*rds.Options)) (*rds.DescribeDBInstancesOutput, error) {
	c.instances.Add(1)
	return c.RDSAPI.DescribeDBInstances(ctx, in, opts...)
}

func (c countingRDS) DescribeDBClusters(ctx context.Context, in *rds.DescribeDBClustersInput, opts ...func(*rds.Options)) (*rds.DescribeDBClustersOutput, error) {
	c.clusters.Add(1)
	return c.RDSAPI.DescribeDBClusters(ctx, in, opts...)
}

// motoClients builds clients without SDK retries, so that a failure is
// seen at once, optionally over transport.
func motoClients(m *sandbox.Moto, transport http.RoundTripper) func(string) discovery.RDSAPI {
	return func(region string) discovery.RDSAPI {
		cfg := m.AWSConfig(region)
		cfg.RetryMaxAttempts = 1
		if transport != nil {
			cfg.HTTPClient = &http.Client{Transport: transport}
		}
		return rds.NewFromConfig(cfg)
	}
}

type fixture struct {
	regions []string
	watcher *discovery.Watcher
	logs    *syncbuf.Buffer
}

func newFixture(t testing.TB, newClient func(string) discovery.RDSAPI, regions []string, rules discovery.Rules, pageSize int32) fixture {
	t.Helper()
	src, err := discovery.NewSource(regions, newClient, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	w, err := discovery.NewWatcher(discovery.WatcherConfig{
		Fetch:  src.Fetch,
		Policy: discovery.Policy{Rules: rules, Regions: regions},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Rand:   func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{regions, w, logs}
}

func (f fixture) refresh(t testing.TB) *discovery.Snapshot {
	t.Helper()
	if err := f.watcher.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	return f.watcher.Current()
}

func instanceEndpoint(region, id string) string {
	return id + ".aaaaaaaaaa." + region + ".rds.amazonaws.com:5432"
}

func clusterEndpoints(t *testing.T, m *sandbox.Moto, region, id string) (writer, reader string) {
	t.Helper()
	out, err := m.RDS(region).DescribeDBClusters(t.Context(), &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	if err != nil || len(out.DBClusters) != 1 {
		t.Fatalf("describe cluster %s: %v", id, err)
	}
	c := out.DBClusters[0]
	return aws.ToString(c.Endpoint) + ":5432", aws.ToString(c.ReaderEndpoint) + ":5432"
}

func iamTarget(name, region, id, endpoint string) discovery.Target {
	return discovery.Target{
		Name: name, Endpoint: endpoint, Region: region, Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull,
		Engine: "postgres", Role: discovery.RoleInstance, Identifier: id, Source: discovery.SourceRDSInstance,
	}
}

// TestDiscoveryTagSituations seeds moto with one database per situation in
// two regions and checks that exactly the expected targets come out.
// ("deleting" cannot be held in moto, which removes a deleted instance at
// once; TestConnectable covers that status.)
func TestDiscoveryTagSituations(t *testing.T) {
	m := startMoto(t)
	on := map[string]string{"rdsproxy:enabled": "true"}
	with := func(kv ...string) map[string]string {
		tags := map[string]string{"rdsproxy:enabled": "true"}
		for i := 0; i < len(kv); i += 2 {
			tags[kv[i]] = kv[i+1]
		}
		return tags
	}
	const east, west = "us-east-1", "eu-west-1"
	err := m.Seed(t.Context(),
		sandbox.MotoDatabase{Region: east, Identifier: "allowed", IAM: true, Tags: with(
			"rdsproxy:db-name", "app", "rdsproxy:local-port", "6001", "rdsproxy:users", "alice, bob",
			"rdsproxy:read-only", "true")},
		sandbox.MotoDatabase{Region: east, Identifier: "denied", IAM: true, Tags: with("env", "prod")},
		sandbox.MotoDatabase{Region: east, Identifier: "denied-glob", IAM: true, Tags: with("env", "production-eu")},
		sandbox.MotoDatabase{Region: east, Identifier: "untagged", IAM: true},
		sandbox.MotoDatabase{Region: east, Identifier: "opted-out", IAM: true, Tags: map[string]string{"rdsproxy:enabled": "false"}},
		sandbox.MotoDatabase{Region: east, Identifier: "no-iam", Tags: on},
		sandbox.MotoDatabase{Region: east, Identifier: "stopped", IAM: true, Tags: on, Stopped: true},
		sandbox.MotoDatabase{Region: east, Identifier: "mysql", Engine: "mysql", IAM: true, Tags: on},
		sandbox.MotoDatabase{Region: east, Identifier: "bad-port", IAM: true, Tags: with("rdsproxy:local-port", "http")},
		sandbox.MotoDatabase{Region: east, Identifier: "aurora", Cluster: true, IAM: true, Members: 2, Tags: with("rdsproxy:db-name", "orders")},
		sandbox.MotoDatabase{Region: east, Identifier: "aurora-stopped", Cluster: true, IAM: true, Tags: on, Stopped: true},
		sandbox.MotoDatabase{Region: east, Identifier: "aurora-no-iam", Cluster: true, Tags: on},
		sandbox.MotoDatabase{Region: east, Identifier: "shared", IAM: true, Tags: on},
		sandbox.MotoDatabase{Region: east, Identifier: "renamed", IAM: true, Tags: with("rdsproxy:name", "nice")},
		sandbox.MotoDatabase{Region: west, Identifier: "shared", IAM: true, Tags: on},
		sandbox.MotoDatabase{Region: west, Identifier: "west-only", IAM: true, Tags: on},
		sandbox.MotoDatabase{Region: west, Identifier: "also-nice", IAM: true, Tags: with("rdsproxy:name", "nice")},
	)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := discovery.ParseRules(nil, []string{"env=prod*"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, motoClients(m, nil), []string{east, west}, rules, 0)
	snap := f.refresh(t)

	allowed := iamTarget("allowed", east, "allowed", instanceEndpoint(east, "allowed"))
	allowed.Database, allowed.LocalPort, allowed.Users, allowed.ReadOnly = "app", 6001, []string{"alice", "bob"}, true
	writerEP, readerEP := clusterEndpoints(t, m, east, "aurora")
	writer := discovery.Target{
		Name: "aurora", Endpoint: writerEP, Region: east, Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull,
		Engine: "aurora-postgresql", Role: discovery.RoleWriter, Identifier: "aurora", Database: "orders",
		Source: discovery.SourceRDSCluster,
	}
	reader := writer
	reader.Name, reader.Endpoint, reader.Role = "aurora-ro", readerEP, discovery.RoleReader
	want := []discovery.Target{
		allowed,
		writer,
		reader,
		iamTarget("bad-port", east, "bad-port", instanceEndpoint(east, "bad-port")),
		iamTarget("nice", east, "renamed", instanceEndpoint(east, "renamed")),
		iamTarget("nice.eu-west-1", west, "also-nice", instanceEndpoint(west, "also-nice")),
		iamTarget("shared", east, "shared", instanceEndpoint(east, "shared")),
		iamTarget("shared.eu-west-1", west, "shared", instanceEndpoint(west, "shared")),
		iamTarget("west-only", west, "west-only", instanceEndpoint(west, "west-only")),
	}
	if diff := cmp.Diff(want, snap.Targets()); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.logs.String(), `rdsproxy:local-port=\"http\" is not a port number`) ||
		!strings.Contains(f.logs.String(), "identifier=bad-port") {
		t.Errorf("no warning about the bad port tag in:\n%s", f.logs.String())
	}
	for _, ref := range []string{"aurora-ro", readerEP, strings.TrimSuffix(readerEP, ":5432")} {
		if got, ok := snap.Lookup(ref); !ok || got.Name != "aurora-ro" {
			t.Errorf("Lookup(%q) = %v, %v", ref, got, ok)
		}
	}
}

// TestDiscoveryPagination: 1,000 instances come back over several pages,
// every one of them.
func TestDiscoveryPagination(t *testing.T) {
	m := startMoto(t)
	const n = 1000
	seedMany(t, m, "us-east-1", n)
	var instances, clusters atomic.Int32
	base := motoClients(m, nil)
	counted := func(region string) discovery.RDSAPI {
		return countingRDS{RDSAPI: base(region), instances: &instances, clusters: &clusters}
	}
	f := newFixture(t, counted, []string{"us-east-1"}, discovery.Rules{}, 100)
	snap := f.refresh(t)
	if snap.Len() != n {
		t.Errorf("discovered %d targets, want %d", snap.Len(), n)
	}
	for i := range n {
		if _, ok := snap.Lookup(fmt.Sprintf("db-%04d", i)); !ok {
			t.Fatalf("db-%04d missing", i)
		}
	}
	if got := instances.Load(); got != n/100 {
		t.Errorf("DescribeDBInstances called %d times, want %d pages", got, n/100)
	}
	if got := clusters.Load(); got != 1 {
		t.Errorf("DescribeDBClusters called %d times, want 1", got)
	}
}

func seedMany(t testing.TB, m *sandbox.Moto, region string, n int) {
	t.Helper()
	dbs := make([]sandbox.MotoDatabase, n)
	for i := range dbs {
		dbs[i] = sandbox.MotoDatabase{Region: region, Identifier: fmt.Sprintf("db-%04d", i), IAM: true,
			Tags: map[string]string{"rdsproxy:enabled": "true"}}
	}
	if err := m.Seed(t.Context(), dbs...); err != nil {
		t.Fatal(err)
	}
}

// TestDiscoveryTagChange: retagging, stopping or deleting a database
// flips the decision at the next refresh, without a new watcher.
func TestDiscoveryTagChange(t *testing.T) {
	m := startMoto(t)
	ctx := t.Context()
	const r = "us-east-1"
	err := m.Seed(ctx,
		sandbox.MotoDatabase{Region: r, Identifier: "a", IAM: true, Tags: map[string]string{"rdsproxy:enabled": "true"}},
		sandbox.MotoDatabase{Region: r, Identifier: "b", IAM: true},
		sandbox.MotoDatabase{Region: r, Identifier: "c", IAM: true, Cluster: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, motoClients(m, nil), []string{r}, discovery.Rules{}, 0)
	names := func() []string {
		var out []string
		for _, tg := range f.refresh(t).Targets() {
			out = append(out, tg.Name)
		}
		return out
	}
	steps := []struct {
		name   string
		change func() error
		want   []string
	}{
		{"initial", func() error { return nil }, []string{"a"}},
		{"opt b and c in, a out", func() error {
			if err := m.RetagDatabase(ctx, r, "a", false, nil, "rdsproxy:enabled"); err != nil {
				return err
			}
			if err := m.RetagDatabase(ctx, r, "c", true, map[string]string{"rdsproxy:enabled": "true"}); err != nil {
				return err
			}
			return m.RetagDatabase(ctx, r, "b", false, map[string]string{"rdsproxy:enabled": "true"})
		}, []string{"b", "c", "c-ro"}},
		{"rename b by tag", func() error {
			return m.RetagDatabase(ctx, r, "b", false, map[string]string{"rdsproxy:name": "bee"})
		}, []string{"bee", "c", "c-ro"}},
		{"stop b", func() error {
			_, err := m.RDS(r).StopDBInstance(ctx, &rds.StopDBInstanceInput{DBInstanceIdentifier: aws.String("b")})
			return err
		}, []string{"c", "c-ro"}},
		{"deny c by a new rule", func() error {
			rules, err := discovery.ParseRules(nil, []string{"rdsproxy:enabled"})
			if err != nil {
				return err
			}
			return f.watcher.SetConfig(discovery.Policy{Rules: rules, Regions: f.regions})
		}, nil},
		{"back to default rules, start b", func() error {
			if _, err := m.RDS(r).StartDBInstance(ctx, &rds.StartDBInstanceInput{DBInstanceIdentifier: aws.String("b")}); err != nil {
				return err
			}
			return f.watcher.SetConfig(discovery.Policy{Regions: f.regions})
		}, []string{"bee", "c", "c-ro"}},
		{"delete b", func() error {
			_, err := m.RDS(r).DeleteDBInstance(ctx, &rds.DeleteDBInstanceInput{
				DBInstanceIdentifier: aws.String("b"), SkipFinalSnapshot: aws.Bool(true)})
			return err
		}, []string{"c", "c-ro"}},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, names()); diff != "" {
			t.Errorf("%s: targets (-want +got):\n%s", s.name, diff)
		}
	}
}

// TestDiscoveryMotoStops: with moto gone, refreshes fail, the last
// snapshot stays, the streak is logged once, and the waits back off.
func TestDiscoveryMotoStops(t *testing.T) {
	m := startMoto(t)
	seedMany(t, m, "us-east-1", 3)
	f := newFixture(t, motoClients(m, nil), []string{"us-east-1"}, discovery.Rules{}, 0)
	snap := f.refresh(t)
	if snap.Len() != 3 {
		t.Fatalf("discovered %d targets, want 3", snap.Len())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		err := f.watcher.Refresh(t.Context())
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("refresh %d with moto stopped: %v", i, err)
		}
		if f.watcher.Current() != snap {
			t.Fatalf("refresh %d dropped the last good snapshot", i)
		}
		if got := f.watcher.NextDelay(); got != want {
			t.Errorf("wait after %d failures = %v, want %v", i+1, got, want)
		}
	}
	if st := f.watcher.Status(); st.ConsecutiveFailures != 4 || st.Throttled || st.Targets != 3 {
		t.Errorf("status = %+v", st)
	}
	if n := strings.Count(f.logs.String(), "discovery refresh failed"); n != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", n, f.logs.String())
	}
}

// TestDiscoveryUnreachableSaysRoute: when the RDS API cannot be reached
// at all before a first snapshot, the warning points at the network route
// to it, not at the credentials (which were never tried).
func TestDiscoveryUnreachableSaysRoute(t *testing.T) {
	m := startMoto(t)
	f := newFixture(t, motoClients(m, nil), []string{"us-east-1"}, discovery.Rules{}, 0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.watcher.Refresh(t.Context()); err == nil {
		t.Fatal("refresh with moto stopped succeeded")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "check that the server can reach the RDS API") || strings.Contains(logs, "credentials") {
		t.Errorf("unreachable RDS API: the warning should name the route, not the credentials:\n%s", logs)
	}
}

// TestDiscoveryNoCredentialsSaysCredentials: credentials that cannot be
// had (an instance role asked of an unreachable metadata service, as in a
// pod without IRSA) fail over the network too, but the warning names the
// credentials, not the route to the RDS API.
func TestDiscoveryNoCredentialsSaysCredentials(t *testing.T) {
	m := startMoto(t)
	noRole := func(region string) discovery.RDSAPI {
		cfg := m.AWSConfig(region)
		cfg.RetryMaxAttempts = 1
		cfg.Credentials = aws.NewCredentialsCache(ec2rolecreds.New(func(o *ec2rolecreds.Options) {
			o.Client = imds.New(imds.Options{Endpoint: "http://127.0.0.1:1", Retryer: aws.NopRetryer{}})
		}))
		return rds.NewFromConfig(cfg)
	}
	f := newFixture(t, noRole, []string{"us-east-1"}, discovery.Rules{}, 0)
	if err := f.watcher.Refresh(t.Context()); err == nil {
		t.Fatal("refresh without credentials succeeded")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "the server got no AWS credentials") || strings.Contains(logs, "reach the RDS API") {
		t.Errorf("no credentials: the warning should name them, not the route:\n%s", logs)
	}
}

// throttlingTransport answers like RDS does when throttling, while on;
// otherwise it passes requests through.
type throttlingTransport struct {
	on   atomic.Bool
	next http.RoundTripper
}

const throttleXML = `<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">
  <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>
  <RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId>
</ErrorResponse>`

func (tt *throttlingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !tt.on.Load() {
		return tt.next.RoundTrip(req)
	}
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"text/xml"}, "X-Amzn-Requestid": {"7a62c49f-347e-4fc4-9331-6e8eEXAMPLE"}},
		Body:    io.NopCloser(strings.NewReader(throttleXML)),
		Request: req,
	}, nil
}

// TestDiscoveryThrottled: an RDS Throttling response, parsed by the real
// SDK, is recognised and backs off longer; the snapshot stays.
func TestDiscoveryThrottled(t *testing.T) {
	m := startMoto(t)
	seedMany(t, m, "us-east-1", 2)
	tr := &throttlingTransport{next: http.DefaultTransport}
	f := newFixture(t, motoClients(m, tr), []string{"us-east-1"}, discovery.Rules{}, 0)
	snap := f.refresh(t)
	tr.on.Store(true)
	for i, want := range []time.Duration{discovery.DefaultThrottleBackoff, 2 * discovery.DefaultThrottleBackoff} {
		err := f.watcher.Refresh(t.Context())
		if !discovery.IsThrottle(err) {
			t.Fatalf("refresh %d: err = %v, want a throttling error", i, err)
		}
		if got := f.watcher.NextDelay(); got != want {
			t.Errorf("wait after %d throttled refreshes = %v, want %v", i+1, got, want)
		}
	}
	if f.watcher.Current() != snap || !f.watcher.Status().Throttled {
		t.Errorf("snapshot kept = %v, status = %+v", f.watcher.Current() == snap, f.watcher.Status())
	}
	tr.on.Store(false)
	if f.refresh(t) == snap {
		t.Error("recovery did not swap in a new snapshot")
	}
	logs := f.logs.String()
	if strings.Count(logs, "discovery refresh failed") != 1 || !strings.Contains(logs, "throttled=true") ||
		!strings.Contains(logs, "discovery refresh recovered") {
		t.Errorf("logs:\n%s", logs)
	}
}

func TestNewSourceValidates(t *testing.T) {
	never := func(string) discovery.RDSAPI { return nil }
	for _, tc := range []struct {
		regions []string
		page    int32
	}{{nil, 0}, {[]string{"a", "a"}, 0}, {[]string{""}, 0}, {[]string{"a"}, 10}, {[]string{"a"}, 101}} {
		if _, err := discovery.NewSource(tc.regions, never, tc.page); err == nil {
			t.Errorf("NewSource(%q, %d) = nil error", tc.regions, tc.page)
		}
	}
}

func BenchmarkRefresh1000(b *testing.B) {
	m := startMoto(b)
	seedMany(b, m, "us-east-1", 1000)
	f := newFixture(b, motoClients(m, nil), []string{"us-east-1"}, discovery.Rules{}, 100)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.watcher.Refresh(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	if n := f.watcher.Current().Len(); n != 1000 {
		b.Fatalf("%d targets, want 1000", n)
	}
}

// failingTransport fails every request while on is set.
type failingTransport struct{ on *atomic.Bool }

func (f failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.on.Load() {
		return nil, fmt.Errorf("dial %s: connection refused", r.URL.Host)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestDiscoveryRegionDown: with eu-west-1's API unreachable, a tag removed
// in us-east-1 still revokes that database at the next refresh; the
// database in eu-west-1 stays as last seen, the refresh reports the region
// that failed, and once it answers again the refresh succeeds.
func TestDiscoveryRegionDown(t *testing.T) {
	m := startMoto(t)
	ctx := t.Context()
	optIn := map[string]string{"rdsproxy:enabled": "true"}
	if err := m.Seed(ctx,
		sandbox.MotoDatabase{Region: "us-east-1", Identifier: "a", IAM: true, Tags: optIn},
		sandbox.MotoDatabase{Region: "us-east-1", Identifier: "b", IAM: true, Tags: optIn},
		sandbox.MotoDatabase{Region: "eu-west-1", Identifier: "c", IAM: true, Tags: optIn},
	); err != nil {
		t.Fatal(err)
	}
	var euDown atomic.Bool
	clients := func(region string) discovery.RDSAPI {
		if region == "eu-west-1" {
			return motoClients(m, failingTransport{&euDown})(region)
		}
		return motoClients(m, nil)(region)
	}
	f := newFixture(t, clients, []string{"us-east-1", "eu-west-1"}, discovery.Rules{}, 0)
	names := func() []string {
		var out []string
		for _, tg := range f.watcher.Current().Targets() {
			out = append(out, tg.Name)
		}
		return out
	}
	f.refresh(t)
	euDown.Store(true)
	if err := m.RetagDatabase(ctx, "us-east-1", "b", false, nil, "rdsproxy:enabled"); err != nil {
		t.Fatal(err)
	}
	err := f.watcher.Refresh(ctx)
	var failed *discovery.RegionsFailed
	if !errors.As(err, &failed) || !cmp.Equal(failed.Regions, []string{"eu-west-1"}) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("refresh with eu-west-1 down: %v, want eu-west-1 named as failed", err)
	}
	if diff := cmp.Diff([]string{"a", "c"}, names()); diff != "" {
		t.Fatalf("targets with eu-west-1 down (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.logs.String(), "discovery refresh failed in some regions") || !strings.Contains(f.logs.String(), "regions=[eu-west-1]") {
		t.Errorf("the log does not name the region:\n%s", f.logs.String())
	}
	euDown.Store(false)
	f.refresh(t)
	if st := f.watcher.Status(); st.ConsecutiveFailures != 0 || st.Targets != 2 {
		t.Errorf("after eu-west-1 answers: status %+v", st)
	}
}
