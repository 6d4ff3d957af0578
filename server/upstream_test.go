package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

const upstreamHost = "orders.c9xyz.eu-central-2.rds.amazonaws.com"

// fakeUpstream answers an SSLRequest with answer and, after 'S', completes
// a TLS handshake with cert: the part of PostgreSQL's protocol the
// upstream dial sees.
func fakeUpstream(t *testing.T, answer byte, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var req [8]byte
			if _, err := io.ReadFull(c, req[:]); err == nil {
				c.Write([]byte{answer})
				if answer == 'S' {
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
					_ = tc.Handshake() // the client's verdict is what the test checks
				}
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// A failed upstream TLS handshake tells the user why, and the hint tells
// the operator what to change; a certificate that checks out connects.
func TestUpstreamTLSFailuresSayWhatToDo(t *testing.T) {
	trusted, err := sandbox.NewCA("trusted test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := sandbox.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *sandbox.CA, host string) tls.Certificate {
		c, err := ca.Issue(host)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name       string
		answer     byte
		cert       tls.Certificate
		wantReason string // "" means the dial succeeds
		want       []string
	}{
		{"valid certificate", 'S', issue(trusted, upstreamHost), "", nil},
		{"unknown CA, e.g. a region newer than the bundle", 'S', issue(other, upstreamHost), "upstream-tls",
			[]string{"--ca-file", "https://truststore.pki.rds.amazonaws.com/eu-central-2/eu-central-2-bundle.pem", "issued in " + rdsBundleNewest().Format("January 2006")}},
		{"certificate for another host", 'S', issue(trusted, "elsewhere.example.com"), "upstream-tls",
			[]string{"does not name " + upstreamHost, "--map"}},
		{"upstream refuses TLS", 'N', tls.Certificate{}, "upstream-no-tls",
			[]string{"never connects to a database in plaintext"}},
	}
	roots, err := RootCAs(trusted.PEM())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := &discovery.Target{Name: "orders", Endpoint: upstreamHost + ":5432", Region: "eu-central-2",
				Auth: discovery.AuthIAM, TLS: discovery.TLSVerifyFull}
			srv, err := New(Config{Targets: fixed{}, RootCAs: roots,
				DialOverrides: map[string]string{target.Endpoint: fakeUpstream(t, tt.answer, tt.cert)}})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := srv.dialTarget(t.Context(), target)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("dial with a valid certificate: %v", err)
				}
				conn.Close()
				return
			}
			var pe *pgwire.Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a pgwire.Error", err)
			}
			if pe.Code != pgwire.CodeCannotConnect || pe.Reason != tt.wantReason {
				t.Errorf("code %s reason %s, want %s %s", pe.Code, pe.Reason, pgwire.CodeCannotConnect, tt.wantReason)
			}
			for _, w := range tt.want {
				if !strings.Contains(pe.Message+" "+pe.Hint, w) {
					t.Errorf("message %q / hint %q does not say %q", pe.Message, pe.Hint, w)
				}
			}
		})
	}
}

// The embedded bundle holds the current-generation roots (valid until
// 2061 and later) for the regions it covers, not only expired 2019 CAs.
func TestEmbeddedBundleHoldsCurrentRoots(t *testing.T) {
	valid := map[string]bool{}
	rest := rdsBundle
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("embedded bundle: %v", err)
		}
		if c.IsCA && time.Now().Before(c.NotAfter) {
			valid[c.Subject.CommonName] = true
		}
	}
	if newest := rdsBundleNewest(); newest.Year() < 2022 {
		t.Errorf("newest CA in the bundle issued %s, want the 2022 G1 generation or later", newest)
	}
	for _, cn := range []string{"Amazon RDS us-east-1 Root CA RSA2048 G1", "Amazon RDS eu-west-1 Root CA RSA4096 G1",
		"Amazon RDS ap-southeast-2 Root CA ECC384 G1"} {
		if !valid[cn] {
			t.Errorf("embedded bundle has no valid %q (%d valid CAs)", cn, len(valid))
		}
	}
}
