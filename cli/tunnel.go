package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
)

// TunnelFlags say how the client reaches the server.
type TunnelFlags struct {
	Via        string `help:"How to reach the server: direct or kube." default:"direct" enum:"direct,kube" env:"RDSPROXY_VIA"`
	Server     string `help:"Server address HOST:PORT (--via direct)." env:"RDSPROXY_SERVER" placeholder:"HOST:PORT"`
	ServerCA   string `help:"PEM CA that signed the server's certificate; makes the server hop use TLS (verify-full)." type:"existingfile" env:"RDSPROXY_SERVER_CA"`
	ServerName string `help:"Host name to verify in the server's certificate (default: the host of --server)." env:"RDSPROXY_SERVER_NAME"`
	KubeFlags
}

// KubeFlags locate the server's pods for --via kube.
type KubeFlags struct {
	Kubeconfig     string `help:"Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)." env:"KUBECONFIG" placeholder:"FILE"`
	KubeContext    string `help:"Kubeconfig context (default: the current context)." env:"RDSPROXY_KUBE_CONTEXT"`
	KubeNamespace  string `help:"Namespace of the server (default: the context's, else default)." env:"RDSPROXY_KUBE_NAMESPACE"`
	KubeDeployment string `help:"Deployment of the server." default:"rdsproxy" env:"RDSPROXY_KUBE_DEPLOYMENT"`
	KubeSelector   string `help:"Label selector of the server's pods, instead of --kube-deployment." env:"RDSPROXY_KUBE_SELECTOR"`
	KubePort       int    `help:"The server's port inside the pod." default:"5480" env:"RDSPROXY_KUBE_PORT"`
}

// open builds the tunnel and the TLS settings for the server hop.
func (f *TunnelFlags) open(ctx context.Context, log *slog.Logger) (tunnel.Tunnel, *tls.Config, error) {
	cfg, err := f.serverTLS()
	if err != nil {
		return nil, nil, err
	}
	var tun tunnel.Tunnel
	switch f.Via {
	case "kube":
		deployment := f.KubeDeployment
		if f.KubeSelector != "" {
			deployment = ""
		}
		tun, err = kube.New(ctx, kube.Config{
			Kubeconfig: f.Kubeconfig, Context: f.KubeContext, Namespace: f.KubeNamespace,
			Deployment: deployment, Selector: f.KubeSelector, Port: f.KubePort, Logger: log,
		})
	default:
		if f.Server == "" {
			return nil, nil, errors.New("--via direct needs --server HOST:PORT")
		}
		tun, err = tunnel.NewDirect(f.Server, 15*time.Second)
	}
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
