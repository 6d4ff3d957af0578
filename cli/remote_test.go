package cli

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// With the server down, list says what failed in the user's terms and
// why, without the HTTP request's synthetic URL (Get "http://rdsproxy/…").
func TestListServerDown(t *testing.T) {
	isolateAWS(t)
	addr := closedAddr(t)
	var stdout, stderr bytes.Buffer
	code := Run([]string{"list", "--via", "direct", "--server", addr, "-q"}, Env{Stdout: &stdout, Stderr: &stderr})
	want := "rdsproxy: could not get the target list from the rdsproxy server through the --via direct tunnel: dial rdsproxy server " + addr + ": "
	msg := stderr.String()
	if code != ExitFailure || !strings.HasPrefix(msg, want) || !strings.Contains(msg, "connection refused") || strings.Contains(msg, "http://") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q…connection refused, without the URL", code, msg, want)
	}
}

// doctor's "server answers" check says the same.
func TestDoctorServerDown(t *testing.T) {
	tun, err := tunnel.NewDirect(closedAddr(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	d := &doctor{cmd: &DoctorCmd{TunnelFlags: TunnelFlags{Via: "direct"}}, tun: tun}
	_, err = d.checkAnswers(t.Context())
	var p *problem
	if !errors.As(err, &p) || !strings.HasPrefix(p.what, "could not get the target list from the rdsproxy server through the --via direct tunnel: ") ||
		strings.Contains(p.what, "http://") {
		t.Errorf("server answers: %v", err)
	}
}
