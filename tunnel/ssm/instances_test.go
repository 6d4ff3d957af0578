package ssm_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// hangGuard bounds waits for something that should happen soon; no test
// asserts on time.
const hangGuard = 2 * time.Minute

// runTagged runs n instances in moto tagged rdsproxy:server=server.
func runTagged(t *testing.T, api *ec2.Client, server string, n int32) []string {
	t.Helper()
	out, err := api.RunInstances(t.Context(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(n), MaxCount: aws.Int32(n),
		InstanceType: ec2types.InstanceTypeT3Micro,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String(ssm.ServerTag), Value: aws.String(server)}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range out.Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	slices.Sort(ids)
	return ids
}

// TestInstancesHealthy: running tagged instances whose agent is Online,
// through moto's DescribeInstances and the endpoint's
// DescribeInstanceInformation; without the permission to read the agents'
// status, every running tagged instance.
func TestInstancesHealthy(t *testing.T) {
	m, err := sandbox.StartMoto(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	api := ec2.NewFromConfig(m.AWSConfig("us-east-1"))
	ids := runTagged(t, api, "db", 3)
	stopped := runTagged(t, api, "db", 1)
	if _, err := api.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: stopped}); err != nil {
		t.Fatal(err)
	}
	e := startEndpoint(t, ssmendpoint.Config{Targets: append(ids[:2:2], stopped...), ConnectionLost: ids[2:]})
	f := &ssm.Instances{EC2: api, SSM: ssmClient(e), Server: "db"}
	got, err := f.Healthy(t.Context())
	slices.Sort(got) // in moto's order, which is not always the IDs'
	if err != nil || !slices.Equal(got, ids[:2]) {
		t.Fatalf("Healthy = %v, %v; want %v (of running %v)", got, err, ids[:2], ids)
	}
	e.DisconnectTarget(ids[0])
	if got, err = f.Healthy(t.Context()); err != nil || !slices.Equal(got, ids[1:2]) {
		t.Fatalf("after %s went away: %v, %v", ids[0], got, err)
	}
	e.DisconnectTarget(ids[1])
	if _, err = f.Healthy(t.Context()); !errors.Is(err, ssm.ErrNotConnected) {
		t.Fatalf("none Online: %v", err)
	}
	if _, err = (&ssm.Instances{EC2: api, SSM: ssmClient(e), Server: "other"}).Healthy(t.Context()); !errors.Is(err, ssm.ErrNoInstance) {
		t.Fatalf("none tagged: %v", err)
	}
	f = &ssm.Instances{EC2: api, SSM: deniedInfo{}, Server: "db"}
	for range 2 {
		if got, err = f.Healthy(t.Context()); err != nil || !slices.Equal(got, ids) {
			t.Fatalf("without the agents' status: %v, %v; want every running one %v", got, err, ids)
		}
	}
}

// deniedInfo refuses DescribeInstanceInformation as IAM does.
type deniedInfo struct{}

func (deniedInfo) DescribeInstanceInformation(context.Context, *awsssm.DescribeInstanceInformationInput, ...func(*awsssm.Options)) (*awsssm.DescribeInstanceInformationOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not authorized to perform: ssm:DescribeInstanceInformation"}
}

// TestPoolFollowsInstances: a tunnel.Pool of SSM tunnels, one per
// instance, each instance forwarding to its own server. Streams spread
// over both; when one instance goes away its stream ends, its tunnel's
// SessionEnded makes the pool look again, and new streams go to the other
// instance and to a new one.
func TestPoolFollowsInstances(t *testing.T) {
	const a, b, c = "i-0aaaaaaaaaaaaaaa0", "i-0bbbbbbbbbbbbbbb0", "i-0ccccccccccccccc0"
	e := startEndpoint(t, ssmendpoint.Config{Targets: []string{}})
	servers := map[string]*echoServer{}
	for _, id := range []string{a, b, c} {
		servers[id] = startEcho(t)
	}
	e.AddTarget(a, servers[a].ln.Addr().String())
	e.AddTarget(b, servers[b].ln.Addr().String())
	listed := func(context.Context) ([]string, error) {
		var ids []string
		for _, id := range []string{a, b, c} {
			if e.TargetConnected(id) {
				ids = append(ids, id)
			}
		}
		return ids, nil
	}
	usingC := &logSignal{msg: "using this instance of the server", key: "instance", val: c, ch: make(chan struct{})}
	var pool atomic.Pointer[tunnel.Pool]
	p, err := tunnel.NewPool(t.Context(), tunnel.PoolConfig{Resolve: listed, Key: "instance", Backoff: 10 * time.Millisecond,
		Logger: slog.New(usingC),
		Open: func(ctx context.Context, id string) (tunnel.Tunnel, error) {
			return ssm.New(ctx, ssm.Config{API: ssmClient(e), Target: id, Port: 5480, SessionEnded: func(error) {
				if p := pool.Load(); p != nil {
					p.Refresh()
				}
			}})
		}})
	if err != nil {
		t.Fatal(err)
	}
	pool.Store(p)
	defer p.Close()
	dial := func() net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		conn, err := p.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := echoRoundTrip(ctx, conn, 4096, 1); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	onA, onB := dial(), dial()
	defer onB.Close()
	if e.TargetStreams(a) != 1 || e.TargetStreams(b) != 1 {
		t.Fatalf("streams per instance: a %d, b %d; want one each", e.TargetStreams(a), e.TargetStreams(b))
	}
	e.AddTarget(c, servers[c].ln.Addr().String())
	e.DisconnectTarget(a)
	if _, err := onA.Read(make([]byte, 1)); err == nil {
		t.Fatal("the stream through the gone instance still reads")
	}
	onA.Close()
	select {
	case <-usingC.ch:
	case <-time.After(hangGuard):
		t.Fatal("the pool did not find the new instance")
	}
	got := map[string]int64{}
	for range 4 {
		conn := dial()
		defer conn.Close()
	}
	for _, id := range []string{a, b, c} {
		got[id] = e.TargetStreams(id)
	}
	if got[a] != 1 || got[b] != 3 || got[c] != 2 {
		t.Fatalf("streams per instance %v, want a 1 (before it went), b 3 and c 2 (fewest streams first)", got)
	}
}

// logSignal closes ch at the first record with msg and key=val.
type logSignal struct {
	msg, key, val string
	ch            chan struct{}
	once          sync.Once
}

func (h *logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h *logSignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logSignal) WithGroup(string) slog.Handler            { return h }
func (h *logSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == h.key && a.Value.String() == h.val {
				h.once.Do(func() { close(h.ch) })
			}
			return true
		})
	}
	return nil
}
