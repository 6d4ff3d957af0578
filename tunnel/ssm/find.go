package ssm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// ServerTag is the EC2 tag key that names an rdsproxy server instance.
const ServerTag = "rdsproxy:server"

// Errors of finding the server by its tag; the caller may name another way
// to reach the instance (its id).
var (
	// ErrNoInstance means no running instance carries the server tag.
	ErrNoInstance = errors.New("no running EC2 instance found")
	// ErrNotConnected means tagged instances run, but none has its SSM
	// agent Online.
	ErrNotConnected = errors.New("no server instance is connected to Systems Manager")
	// ErrFindDenied means AWS refused to list the instances.
	ErrFindDenied = errors.New("access denied")
)

// FindInstance returns the id of the running EC2 instance tagged
// rdsproxy:server=<serverName>. When several match (e.g. during a rolling
// replacement) it picks the most recently launched one, then the lowest
// instance id, so every client picks the same instance.
func FindInstance(ctx context.Context, api EC2API, serverName string) (string, error) {
	ids, err := runningInstances(ctx, api, serverName)
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// runningInstances lists the running instances tagged
// rdsproxy:server=<serverName>, newest first, then by id; ErrNoInstance
// when there are none.
func runningInstances(ctx context.Context, api EC2API, serverName string) ([]string, error) {
	in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + ServerTag), Values: []string{serverName}},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}}
	var found []ec2types.Instance
	p := ec2.NewDescribeInstancesPaginator(api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, describeError(serverName, err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				if i.State != nil && i.State.Name == ec2types.InstanceStateNameRunning && aws.ToString(i.InstanceId) != "" {
					found = append(found, i)
				}
			}
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%w: no running EC2 instance has the tag %s=%s; check the server name, the AWS region and account of your profile, and that the instance is running",
			ErrNoInstance, ServerTag, serverName)
	}
	slices.SortFunc(found, func(a, b ec2types.Instance) int {
		if c := aws.ToTime(b.LaunchTime).Compare(aws.ToTime(a.LaunchTime)); c != 0 {
			return c // newest first
		}
		return cmp.Compare(aws.ToString(a.InstanceId), aws.ToString(b.InstanceId))
	})
	ids := make([]string, 0, len(found))
	for _, i := range found {
		if id := aws.ToString(i.InstanceId); !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func describeError(serverName string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException":
			return fmt.Errorf("%w: finding the server %q by tag needs ec2:DescribeInstances: %w", ErrFindDenied, serverName, err)
		}
	}
	return fmt.Errorf("ec2 DescribeInstances for %s=%s: %w", ServerTag, serverName, err)
}
