package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// TunnelFlags say how the client reaches the server.
type TunnelFlags struct {
	Via        string `help:"How to reach the server: direct." default:"direct" enum:"direct" env:"RDSPROXY_VIA"`
	Server     string `help:"Server address HOST:PORT (--via direct)." env:"RDSPROXY_SERVER" placeholder:"HOST:PORT"`
	ServerCA   string `help:"PEM CA that signed the server's certificate; makes the server hop use TLS (verify-full)." type:"existingfile" env:"RDSPROXY_SERVER_CA"`
	ServerName string `help:"Host name to verify in the server's certificate (default: the host of --server)." env:"RDSPROXY_SERVER_NAME"`
}

// open builds the tunnel and the TLS settings for the server hop.
func (f *TunnelFlags) open() (tunnel.Tunnel, *tls.Config, error) {
	if f.Server == "" {
		return nil, nil, errors.New("--via direct needs --server HOST:PORT")
	}
	tun, err := tunnel.NewDirect(f.Server, 15*time.Second)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := f.serverTLS()
	if err != nil {
		return nil, nil, err
	}
	return tun, cfg, nil
}

func (f *TunnelFlags) serverTLS() (*tls.Config, error) {
	if f.ServerCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("--server-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--server-ca %s holds no PEM certificate", f.ServerCA)
	}
	name := f.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(f.Server)
	}
	return &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}, nil
}
