package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// rdsBundle is AWS's RDS global CA bundle (all regions, RSA2048/RSA4096/
// ECC384 G1 roots and the older 2019 CAs), published at
// https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem.
//
//go:embed rds-global-bundle.pem
var rdsBundle []byte

// rdsBundleNewest is the issue date of the bundle's newest CA: a region or
// CA added after it needs --ca-file (or `make update-ca` and a rebuild).
var rdsBundleNewest = sync.OnceValue(func() time.Time {
	var newest time.Time
	for rest := rdsBundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return newest
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && c.NotBefore.After(newest) {
			newest = c.NotBefore
		}
	}
})

// RootCAs returns a pool with the embedded RDS bundle plus extraPEM
// (PEM certificates an operator adds, e.g. for a newer region or a
// static target's private CA).
func RootCAs(extraPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rdsBundle) {
		return nil, errors.New("embedded RDS CA bundle holds no certificate")
	}
	if len(extraPEM) > 0 && !pool.AppendCertsFromPEM(extraPEM) {
		return nil, errors.New("extra CA file holds no PEM certificate")
	}
	return pool, nil
}

// dialAddr is where the server connects for t: its endpoint, unless an
// override maps it elsewhere.
func (s *Server) dialAddr(t *discovery.Target) string {
	if addr, ok := s.cfg.DialOverrides[t.Endpoint]; ok {
		return addr
	}
	return t.Endpoint
}

// dialTarget connects to t and, unless t.TLS is disable, negotiates TLS
// with verify-full against the endpoint's host name. A target that
// refuses TLS is an error: there is no plaintext fallback.
func (s *Server) dialTarget(ctx context.Context, t *discovery.Target) (net.Conn, error) {
	return s.dialTargetAt(ctx, t, s.dialAddr(t))
}

// dialTargetAt is dialTarget to addr, an address t's endpoint resolved to
// for a session (a cancel must reach that session's database, not the
// replica a reader endpoint's DNS names next). The certificate is still
// verified against the endpoint's host name.
func (s *Server) dialTargetAt(ctx context.Context, t *discovery.Target, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	start := time.Now()
	conn, err := s.dialer.DialContext(ctx, "tcp", addr)
	s.cfg.Metrics.observeDial(time.Since(start))
	if err != nil {
		return nil, pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonUpstreamDial,
			"rdsproxy: cannot reach target %q at %s: %v", t.Name, addr, unwrapOp(err)).
			WithHint("Check that the database is available and that the server's security group may reach it.")
	}
	if t.TLS == discovery.TLSDisable {
		return conn, nil
	}
	tc, err := s.upgradeUpstream(ctx, conn, t)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// upgradeUpstream asks t for TLS (pgwire.RequestTLS) and verifies its
// certificate against the endpoint's host name.
func (s *Server) upgradeUpstream(ctx context.Context, conn net.Conn, t *discovery.Target) (net.Conn, error) {
	host, _, _ := discovery.SplitEndpoint(t.Endpoint)
	var start time.Time
	tc, err := pgwire.RequestTLS(ctx, conn, func(c net.Conn) *bufferedTLS {
		start = time.Now()
		return newBufferedTLS(c, &tls.Config{
			ServerName:         host,
			RootCAs:            s.cfg.RootCAs,
			MinVersion:         tls.VersionTLS12,
			ClientSessionCache: s.tlsSess,
		})
	})
	if !start.IsZero() {
		s.cfg.Metrics.observeTLS(time.Since(start))
	}
	var step *pgwire.StepError
	switch {
	case errors.Is(err, pgwire.ErrTLSRefused):
		return nil, pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonUpstreamNoTLS,
			"rdsproxy: target %q refused TLS; rdsproxy never connects to a database in plaintext", t.Name)
	case errors.As(err, &step) && step.Step == pgwire.StepTLSHandshake:
		return nil, pgwire.Errorf(pgwire.CodeCannotConnect, contract.ReasonUpstreamTLS,
			"rdsproxy: TLS with target %q failed: %v", t.Name, unwrapOp(step.Err)).
			WithHint(tlsHint(step.Err, t.Region, host))
	case errors.As(err, &step):
		return nil, upstreamErr(t, step.Step, step.Err)
	case err != nil:
		return nil, upstreamErr(t, "TLS", err)
	}
	return tc, nil
}

// tlsHint says what an operator can do about a failed upstream handshake.
func tlsHint(err error, region, host string) string {
	var unknown x509.UnknownAuthorityError
	var mismatch x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		bundle := "global/global-bundle.pem"
		if region != "" {
			bundle = region + "/" + region + "-bundle.pem"
		}
		return fmt.Sprintf("The certificate is not signed by a CA this server trusts. The newest CA in the built-in RDS bundle was issued in %s; "+
			"for a newer region or CA, give the server https://truststore.pki.rds.amazonaws.com/%s with --ca-file.",
			rdsBundleNewest().Format("January 2006"), bundle)
	case errors.As(err, &mismatch):
		return fmt.Sprintf("The certificate does not name %s. If --map sends this endpoint to another address, that address must still present the endpoint's certificate.", host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "The certificate has expired or is not yet valid: check the database's certificate authority setting and this server's clock."
	}
	return "The database's certificate must chain to the RDS CA bundle (or --ca-file) and name its endpoint."
}

// unwrapOp drops net.OpError's addresses, which the message already names.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// upstreamCode is the SQLSTATE of an upstream ErrorResponse; XX000
// (internal_error) when its C field is not one.
func upstreamCode(m pgwire.Message) string {
	if code, _ := pgwire.Refusal(m); code != "" {
		return code
	}
	return "XX000"
}
