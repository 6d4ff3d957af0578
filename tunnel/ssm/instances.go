package ssm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// InstanceInfoAPI is the part of *ssm.Client that reads the agents' status.
type InstanceInfoAPI interface {
	DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, opts ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error)
}

var _ InstanceInfoAPI = (*ssm.Client)(nil)

// Instances finds the server's healthy instances, for a tunnel.Pool's
// Resolve: the running EC2 instances tagged rdsproxy:server=Server whose
// SSM agent is Online.
type Instances struct {
	EC2 EC2API
	// SSM reads the agents' ping status. Nil, or without the permission
	// (ssm:DescribeInstanceInformation), every running tagged instance
	// counts as healthy; one whose sessions fail is still left out.
	SSM    InstanceInfoAPI
	Server string
	Logger *slog.Logger

	noStatus atomic.Bool // the status could not be read (said once)
}

// describeBatch is how many instance ids one DescribeInstanceInformation
// filter carries.
const describeBatch = 50

// Healthy lists the healthy instances, newest first. It fails with
// ErrNoInstance when none runs, ErrNotConnected when none is Online.
func (f *Instances) Healthy(ctx context.Context) ([]string, error) {
	ids, err := runningInstances(ctx, f.EC2, f.Server)
	if err != nil || f.SSM == nil || f.noStatus.Load() {
		return ids, err
	}
	online, err := f.online(ctx, ids)
	if denied(err) {
		if !f.noStatus.Swap(true) && f.Logger != nil {
			f.Logger.Info("cannot read the SSM agents' status (no ssm:DescribeInstanceInformation permission); every running tagged instance counts as healthy",
				"err", err)
		}
		return ids, nil
	}
	if err != nil {
		return nil, err
	}
	healthy := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !online[id] })
	if len(healthy) == 0 {
		return nil, fmt.Errorf("%w: %s tagged %s=%s running, but no SSM agent on them is Online (agent stopped, or no route to the ssm, ssmmessages and ec2messages endpoints)",
			ErrNotConnected, strings.Join(ids, ", "), ServerTag, f.Server)
	}
	return healthy, nil
}

// online reads which of ids have their agent Online.
func (f *Instances) online(ctx context.Context, ids []string) (map[string]bool, error) {
	online := make(map[string]bool, len(ids))
	for batch := range slices.Chunk(ids, describeBatch) {
		in := &ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{
			{Key: aws.String("InstanceIds"), Values: batch}}}
		p := ssm.NewDescribeInstanceInformationPaginator(f.SSM, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("ssm DescribeInstanceInformation: %w", err)
			}
			for _, i := range page.InstanceInformationList {
				if i.PingStatus == ssmtypes.PingStatusOnline {
					online[aws.ToString(i.InstanceId)] = true
				}
			}
		}
	}
	return online, nil
}

func denied(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "AccessDenied")
}
