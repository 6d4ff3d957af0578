package ssm

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/go-cmp/cmp"
)

// A custom document pins the port, so StartSession must not pass one (SSM
// rejects parameters a document does not declare); without it the AWS
// documents take the port (and the host) as parameters.
func TestStartSessionInput(t *testing.T) {
	tests := []struct {
		name, host, document string
		wantDoc              string
		wantParams           map[string][]string
	}{
		{"local", "", "", DocumentPortForwarding, map[string][]string{"portNumber": {"5480"}}},
		{"remote host", "10.0.0.7", "", DocumentPortForwardingRemoteHost, map[string][]string{"portNumber": {"5480"}, "host": {"10.0.0.7"}}},
		{"pinned document", "", "orders-port-forward", "orders-port-forward", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := startSessionInput("i-0123456789abcdef0", tc.host, tc.document, 5480)
			if got := aws.ToString(in.DocumentName); got != tc.wantDoc {
				t.Errorf("document %q, want %q", got, tc.wantDoc)
			}
			if diff := cmp.Diff(tc.wantParams, in.Parameters); diff != "" {
				t.Errorf("parameters (-want +got):\n%s", diff)
			}
			if aws.ToString(in.Target) != "i-0123456789abcdef0" {
				t.Errorf("target %q", aws.ToString(in.Target))
			}
		})
	}
}

func TestConfigDocument(t *testing.T) {
	base := Config{API: fakeSSMForValidate{}, Target: "i-0123456789abcdef0", Port: 5480}
	for _, tc := range []struct {
		document, host, want string
	}{
		{"orders-port-forward", "", ""},
		{"arn:aws:ssm:eu-west-1:123456789012:document/orders-port-forward", "", ""},
		{"orders port forward", "", "not an SSM document name"},
		{"orders-port-forward", "10.0.0.7", "cannot be combined with a remote host"},
	} {
		c := base
		c.Document, c.Host = tc.document, tc.host
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(document %q, host %q) = %v, want %q", tc.document, tc.host, err, tc.want)
		}
	}
}

// fakeSSMForValidate satisfies SSMAPI for Validate, which never calls it.
type fakeSSMForValidate struct{ SSMAPI }
