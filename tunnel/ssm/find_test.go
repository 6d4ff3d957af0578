package ssm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestFindInstanceMoto runs the real DescribeInstances filters against moto:
// only running instances with the exact tag value count, and the newest of
// them wins. Each instance is launched in its own second, since two launched
// in one call may straddle a second boundary (CI saw it); ties are
// TestFindInstanceChoice's.
func TestFindInstanceMoto(t *testing.T) {
	m, err := sandbox.StartMoto(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	api := ec2.NewFromConfig(m.AWSConfig("eu-west-1"))
	older := runTagged(t, api, "alpha", 1)
	time.Sleep(1100 * time.Millisecond) // EC2 reports launch times to the second
	newer := runTagged(t, api, "alpha", 1)
	time.Sleep(1100 * time.Millisecond)
	stopped := runTagged(t, api, "alpha", 1) // the newest, but not running
	if _, err := api.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: stopped}); err != nil {
		t.Fatal(err)
	}
	runTagged(t, api, "alpha-2", 1)
	got, err := ssm.FindInstance(t.Context(), api, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if got != newer[0] {
		t.Errorf("FindInstance(alpha) = %s, want the newest running %s (older %s, stopped %s)", got, newer[0], older[0], stopped[0])
	}
	_, err = ssm.FindInstance(t.Context(), api, "gamma")
	if !errors.Is(err, ssm.ErrNoInstance) || !strings.Contains(err.Error(), "no running EC2 instance has the tag rdsproxy:server=gamma; check") {
		t.Errorf("FindInstance(gamma) error = %v", err)
	}
}

// fakeEC2 serves fixed pages of instances, or an error.
type fakeEC2 struct {
	pages [][]ec2types.Instance
	err   error
}

func (f *fakeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if f.err != nil {
		return nil, f.err
	}
	i := 0
	if in.NextToken != nil {
		i = int(aws.ToString(in.NextToken)[0] - '0')
	}
	out := &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: f.pages[i]}}}
	if i+1 < len(f.pages) {
		out.NextToken = aws.String(string(rune('0' + i + 1)))
	}
	return out, nil
}

func TestFindInstanceChoice(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := func(id string, launched time.Time) ec2types.Instance {
		return ec2types.Instance{InstanceId: aws.String(id), LaunchTime: aws.Time(launched),
			State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning}}
	}
	tests := []struct {
		name    string
		api     *fakeEC2
		want    string
		wantErr string
	}{
		{"newest wins across pages", &fakeEC2{pages: [][]ec2types.Instance{
			{inst("i-0aaa", t0)}, {inst("i-0bbb", t0.Add(time.Hour)), inst("i-0ccc", t0)}}}, "i-0bbb", ""},
		{"tie: lowest id", &fakeEC2{pages: [][]ec2types.Instance{{inst("i-0ccc", t0), inst("i-0aab", t0)}}}, "i-0aab", ""},
		{"none", &fakeEC2{pages: [][]ec2types.Instance{{}}}, "", "no running EC2 instance has the tag rdsproxy:server=db"},
		{"denied", &fakeEC2{err: &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized"}},
			"", "needs ec2:DescribeInstances"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ssm.FindInstance(t.Context(), tt.api, "db")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FindInstance = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
