package sandbox

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// AddServerInstance adds a server "instance" to the world, as an Auto
// Scaling group launching one: a running EC2 instance in moto tagged
// rdsproxy:server=name, whose SSM agent connects to the endpoint and
// forwards port sessions to serverAddr (that instance's own rdsproxy
// server). It returns the instance id.
func (w *World) AddServerInstance(ctx context.Context, name, serverAddr string) (string, error) {
	id, err := w.Moto.RunServerInstance(ctx, Region, name)
	if err != nil {
		return "", err
	}
	w.SSM.AddTarget(id, serverAddr)
	return id, nil
}

// TerminateServerInstance ends an instance as EC2 does at the end of an
// instance refresh (after its server drained): its SSM agent goes away
// with it (live sessions drop, StartSession fails with TargetNotConnected,
// DescribeInstanceInformation says ConnectionLost) and moto no longer lists
// it running.
func (w *World) TerminateServerInstance(ctx context.Context, id string) error {
	w.SSM.DisconnectTarget(id)
	if _, err := ec2.NewFromConfig(w.Moto.AWSConfig(Region)).TerminateInstances(ctx,
		&ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		return fmt.Errorf("terminate server instance %s: %w", id, err)
	}
	return nil
}
