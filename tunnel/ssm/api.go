package ssm

import (
	"context"
	"regexp"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// SSMAPI is the part of *ssm.Client the tunnel uses.
type SSMAPI interface {
	StartSession(ctx context.Context, in *ssm.StartSessionInput, opts ...func(*ssm.Options)) (*ssm.StartSessionOutput, error)
	TerminateSession(ctx context.Context, in *ssm.TerminateSessionInput, opts ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error)
	ResumeSession(ctx context.Context, in *ssm.ResumeSessionInput, opts ...func(*ssm.Options)) (*ssm.ResumeSessionOutput, error)
}

// EC2API is the part of *ec2.Client FindInstance uses.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

var (
	_ SSMAPI = (*ssm.Client)(nil)
	_ EC2API = (*ec2.Client)(nil)
)

// Port-forwarding documents (§2.1).
const (
	DocumentPortForwarding           = "AWS-StartPortForwardingSession"
	DocumentPortForwardingRemoteHost = "AWS-StartPortForwardingSessionToRemoteHost"
)

// documentName is an SSM document name or ARN (the API's own pattern for names).
var documentName = regexp.MustCompile(`^(arn:[a-z-]+:ssm:[a-z0-9-]+:[0-9]*:document/)?[a-zA-Z0-9_.-]{3,128}$`)

// IsDocumentName reports whether s is an SSM document name (3 to 128
// letters, digits, _ . -) or a document's ARN.
func IsDocumentName(s string) bool { return documentName.MatchString(s) }

// startSessionInput chooses the document: a custom one that pins the port
// when given (no parameters: the document decides), else the remote-host
// one when host is set (the agent dials host:port), else the local one (the
// agent dials localhost:port on the target).
func startSessionInput(target, host, document string, port int) *ssm.StartSessionInput {
	if document != "" {
		return &ssm.StartSessionInput{Target: aws.String(target), DocumentName: aws.String(document), Reason: aws.String("rdsproxy connect")}
	}
	in := &ssm.StartSessionInput{
		Target:       aws.String(target),
		DocumentName: aws.String(DocumentPortForwarding),
		Parameters:   map[string][]string{"portNumber": {strconv.Itoa(port)}},
		Reason:       aws.String("rdsproxy connect"),
	}
	if host != "" {
		in.DocumentName = aws.String(DocumentPortForwardingRemoteHost)
		in.Parameters["host"] = []string{host}
	}
	return in
}
