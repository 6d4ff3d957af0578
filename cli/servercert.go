package cli

import (
	"crypto/tls"
	"fmt"
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
