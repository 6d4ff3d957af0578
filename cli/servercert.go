package cli

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// serverCert is the server's TLS certificate, read from --tls-cert and
// --tls-key at start and read again on SIGHUP, so that a rotated
// certificate (cert-manager, an ACME renewal) is served to new
// connections without a restart and its drain.
type serverCert struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// load reads the pair; on an error the certificate served stays the one
// loaded before.
func (c *serverCert) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	c.current.Store(&cert)
	return nil
}

// reload reads the files again and logs the outcome; nil (no
// --tls-cert) does nothing.
func (c *serverCert) reload(log *slog.Logger) {
	if c == nil {
		return
	}
	if err := c.load(); err != nil {
		log.Error("TLS certificate reload failed; new connections still get the previous one", "err", err)
		return
	}
	if !c.warnIfNotCurrent(log, time.Now()) {
		log.Info("TLS certificate reloaded", "not_after", c.notAfter().UTC().Format(time.RFC3339))
	}
}

// warnIfNotCurrent warns, and reports true, when the certificate served
// is outside its validity period at now: every client that verifies it
// refuses it, and a stale file rotated in would otherwise pass as a
// successful reload.
func (c *serverCert) warnIfNotCurrent(log *slog.Logger, now time.Time) bool {
	cert := c.current.Load()
	if cert == nil || cert.Leaf == nil {
		return false
	}
	var problem string
	switch {
	case now.After(cert.Leaf.NotAfter):
		problem = "expired at " + cert.Leaf.NotAfter.UTC().Format(time.RFC3339)
	case now.Before(cert.Leaf.NotBefore):
		problem = "is not valid before " + cert.Leaf.NotBefore.UTC().Format(time.RFC3339)
	default:
		return false
	}
	log.Warn("the TLS certificate ("+c.certFile+") "+problem+": clients that verify it (sslmode=verify-ca or verify-full) refuse it; "+
		"install a current one and send SIGHUP", "not_before", cert.Leaf.NotBefore.UTC().Format(time.RFC3339),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return true
}

// get is tls.Config.GetCertificate.
func (c *serverCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// notAfter is when the certificate served now expires, for the log.
func (c *serverCert) notAfter() time.Time {
	if cert := c.current.Load(); cert != nil && cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}
