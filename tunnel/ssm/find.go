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

// ErrNoInstance means no running instance carries the server tag.
var ErrNoInstance = errors.New("no running EC2 instance found")

// FindInstance returns the id of the running EC2 instance tagged
// rdsproxy:server=<serverName>. When several match (e.g. during a rolling
// replacement) it picks the most recently launched one, then the lowest
// instance id, so every client picks the same instance.
func FindInstance(ctx context.Context, api EC2API, serverName string) (string, error) {
	in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + ServerTag), Values: []string{serverName}},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}}
	var found []ec2types.Instance
	p := ec2.NewDescribeInstancesPaginator(api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", describeError(serverName, err)
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
		return "", fmt.Errorf("%w: no running EC2 instance has the tag %s=%s; check the server name, the AWS region and account of your profile, and that the instance is running (or pass the instance id with --ssm-target)",
			ErrNoInstance, ServerTag, serverName)
	}
	slices.SortFunc(found, func(a, b ec2types.Instance) int {
		if c := aws.ToTime(b.LaunchTime).Compare(aws.ToTime(a.LaunchTime)); c != 0 {
			return c // newest first
		}
		return cmp.Compare(aws.ToString(a.InstanceId), aws.ToString(b.InstanceId))
	})
	return aws.ToString(found[0].InstanceId), nil
}

func describeError(serverName string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException":
			return fmt.Errorf("access denied: finding the server %q by tag needs ec2:DescribeInstances (or pass the instance id with --ssm-target): %w", serverName, err)
		}
	}
	return fmt.Errorf("ec2 DescribeInstances for %s=%s: %w", ServerTag, serverName, err)
}
