package sandbox

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/google/go-cmp/cmp"
)

// testWriter sends moto's output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startTestMoto(t *testing.T) *Moto {
	t.Helper()
	m, err := StartMoto(t.Context(), t.TempDir(), testWriter{t})
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

type described struct {
	Status, Endpoint, Reader, Cluster string
	IAM                               bool
	Tags                              map[string]string
}

func describeAll(ctx context.Context, t *testing.T, c *rds.Client) map[string]described {
	t.Helper()
	got := map[string]described{}
	out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range out.DBInstances {
		d := described{Status: aws.ToString(in.DBInstanceStatus), IAM: aws.ToBool(in.IAMDatabaseAuthenticationEnabled),
			Cluster: aws.ToString(in.DBClusterIdentifier), Tags: map[string]string{}}
		if in.Endpoint != nil {
			d.Endpoint = aws.ToString(in.Endpoint.Address)
		}
		for _, tg := range in.TagList {
			d.Tags[*tg.Key] = *tg.Value
		}
		got["db:"+*in.DBInstanceIdentifier] = d
	}
	cl, err := c.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range cl.DBClusters {
		d := described{Status: aws.ToString(x.Status), IAM: aws.ToBool(x.IAMDatabaseAuthenticationEnabled),
			Endpoint: aws.ToString(x.Endpoint), Reader: aws.ToString(x.ReaderEndpoint), Tags: map[string]string{}}
		for _, tg := range x.TagList {
			d.Tags[*tg.Key] = *tg.Value
		}
		got["cluster:"+*x.DBClusterIdentifier] = d
	}
	return got
}

// TestMotoSeed proves what the discovery tests rely on: moto keeps tags,
// IAM flags, statuses, regions apart, cluster writer and reader endpoints,
// and applies tag changes.
func TestMotoSeed(t *testing.T) {
	m := startTestMoto(t)
	ctx := t.Context()
	err := m.Seed(ctx,
		MotoDatabase{Region: "us-east-1", Identifier: "plain", IAM: true, Tags: map[string]string{"rdsproxy:enabled": "true"}},
		MotoDatabase{Region: "us-east-1", Identifier: "off", Stopped: true},
		MotoDatabase{Region: "us-east-1", Identifier: "aur", Cluster: true, IAM: true, Members: 2, Tags: map[string]string{"a": "b"}},
		MotoDatabase{Region: "eu-west-1", Identifier: "plain"},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := describeAll(ctx, t, m.RDS("us-east-1"))
	aur := got["cluster:aur"]
	if !strings.HasPrefix(aur.Endpoint, "aur.cluster-") || !strings.HasPrefix(aur.Reader, "aur.cluster-ro-") {
		t.Errorf("cluster endpoints = %q, %q", aur.Endpoint, aur.Reader)
	}
	for k, d := range got {
		if !strings.HasPrefix(k, "cluster:") {
			d.Endpoint = strings.TrimSuffix(d.Endpoint, ".aaaaaaaaaa.us-east-1.rds.amazonaws.com")
		} else {
			d.Endpoint, d.Reader = "", ""
		}
		got[k] = d
	}
	want := map[string]described{
		"db:plain":    {Status: "available", Endpoint: "plain", IAM: true, Tags: map[string]string{"rdsproxy:enabled": "true"}},
		"db:off":      {Status: "stopped", Endpoint: "off", Tags: map[string]string{}},
		"db:aur-1":    {Status: "available", Endpoint: "aur-1", Cluster: "aur", Tags: map[string]string{}},
		"db:aur-2":    {Status: "available", Endpoint: "aur-2", Cluster: "aur", Tags: map[string]string{}},
		"cluster:aur": {Status: "available", IAM: true, Tags: map[string]string{"a": "b"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("us-east-1 (-want +got):\n%s", diff)
	}
	if eu := describeAll(ctx, t, m.RDS("eu-west-1")); len(eu) != 1 || eu["db:plain"].IAM {
		t.Errorf("eu-west-1 = %v, want one instance without IAM", eu)
	}

	if err := m.RetagDatabase(ctx, "us-east-1", "aur", true, map[string]string{"c": "d"}, "a"); err != nil {
		t.Fatal(err)
	}
	if err := m.RetagDatabase(ctx, "us-east-1", "plain", false, nil, "rdsproxy:enabled"); err != nil {
		t.Fatal(err)
	}
	got = describeAll(ctx, t, m.RDS("us-east-1"))
	if diff := cmp.Diff(map[string]string{"c": "d"}, got["cluster:aur"].Tags); diff != "" {
		t.Errorf("cluster tags after retag (-want +got):\n%s", diff)
	}
	if len(got["db:plain"].Tags) != 0 {
		t.Errorf("instance tags after untag = %v", got["db:plain"].Tags)
	}

	if err := m.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if got := describeAll(ctx, t, m.RDS("us-east-1")); len(got) != 0 {
		t.Errorf("after Reset: %v", got)
	}
}

func TestMotoClose(t *testing.T) {
	m, err := StartMoto(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Endpoint(), "http://127.0.0.1:") {
		t.Errorf("Endpoint() = %q", m.Endpoint())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	resp, err := http.Get(m.Endpoint() + "/moto-api/data.json")
	if err == nil {
		resp.Body.Close()
		t.Errorf("moto still answers after Close: %s", resp.Status)
	}
}

func TestStartMotoNotOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if m, err := StartMoto(t.Context(), t.TempDir(), nil); err == nil {
		m.Close()
		t.Fatal("StartMoto found moto_server on an empty PATH")
	}
}
