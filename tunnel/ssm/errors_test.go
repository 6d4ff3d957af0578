package ssm_test

import (
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestStartErrors: what a user meets when a session cannot start is one
// plain sentence naming the cause.
func TestStartErrors(t *testing.T) {
	tests := []struct {
		name   string
		cfg    ssmendpoint.Config
		target string
		want   string
		is     error
	}{
		{"not connected", ssmendpoint.Config{}, "i-0fffffffffffffff0",
			"instance i-0fffffffffffffff0 is not connected to Systems Manager (agent stopped or no route to the SSM endpoints)", tunnel.ErrReplicaGone},
		{"access denied", ssmendpoint.Config{DeniedTargets: []string{testTarget}}, testTarget,
			"access denied: your AWS identity is not allowed ssm:StartSession on arn:aws:ec2:us-east-1:123456789012:instance/" + testTarget +
				"; it needs ssm:StartSession on " + testTarget + " and on the document arn:aws:ssm:<region>::document/AWS-StartPortForwardingSession", nil},
		{"agent too old", ssmendpoint.Config{NoPortPlugin: true, AgentVersion: "2.3.612.0"}, testTarget,
			"the SSM agent on " + testTarget + " is too old for port forwarding", nil},
		{"kms requested", ssmendpoint.Config{RequestKMS: true}, testTarget,
			"the agent asked for KMS encryption of the session, which rdsproxy does not support", ssm.ErrHandshake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startEndpoint(t, tt.cfg)
			_, err := ssm.New(t.Context(), ssm.Config{API: ssmClient(e), Target: tt.target, Port: 5432})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v\nwant it to contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

// TestConnectToPortError: the agent cannot reach the destination; the
// stream fails with ErrConnectToPort instead of a silent EOF.
func TestConnectToPortError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	e := startEndpoint(t, ssmendpoint.Config{})
	tun := newTunnel(t, e, ssm.Config{Port: closedPort})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = io.ReadAll(c)
	if !errors.Is(err, ssm.ErrConnectToPort) {
		t.Fatalf("read = %v, want ErrConnectToPort", err)
	}
	if st := e.Stats(); st.DialFailures != 1 {
		t.Errorf("endpoint dial failures %d, want 1", st.DialFailures)
	}
}

// TestRemoteHostDocument: Host selects the ToRemoteHost document and the
// agent dials host:port.
func TestRemoteHostDocument(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{})
	tun := newTunnel(t, e, ssm.Config{Host: "127.0.0.1", Port: echo.port()})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(t.Context(), c, 10000, 3); err != nil {
		t.Fatal(err)
	}
	if docs := e.Stats().Documents; !slices.Equal(docs, []string{ssm.DocumentPortForwardingRemoteHost}) {
		t.Errorf("documents %v", docs)
	}
}

// TestDelayedAcksAndNotReady: acks arrive late and the agent ignores the
// first data after the handshake; retransmission makes it work anyway.
func TestDelayedAcksAndNotReady(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{NotReady: 300 * time.Millisecond,
		Faults: ssmendpoint.Faults{AckDelay: 30 * time.Millisecond}})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(t.Context(), c, 1<<20, 4); err != nil {
		t.Fatal(err)
	}
	if st := tun.Stats(); st.Resent == 0 {
		t.Errorf("no retransmission despite the not-ready window: %+v", st)
	}
}

// TestPinnedDocument: with a custom document that pins the port (the
// Terraform module's), StartSession carries no portNumber (the endpoint
// refuses parameters the document does not define) and the agent dials the
// document's port.
func TestPinnedDocument(t *testing.T) {
	echo := startEcho(t)
	const doc = "rdsproxy-port-forward"
	e := startEndpoint(t, ssmendpoint.Config{Strict: true, PinnedDocuments: map[string]int{doc: echo.port()}})
	tun := newTunnel(t, e, ssm.Config{Document: doc, Port: echo.port()})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(t.Context(), c, 10000, 4); err != nil {
		t.Fatal(err)
	}
	if docs := e.Stats().Documents; !slices.Equal(docs, []string{doc}) {
		t.Errorf("documents %v", docs)
	}
}
