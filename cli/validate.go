package cli

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// Flag checks that kong runs after parsing (Validate methods), so a
// value that can never work is a usage error (exit 2, usage shown) before
// any credentials are read or anything is dialled.

// maxPort is the largest TCP port.
const maxPort = 65535

// Validate checks what each --via mode needs and that the server ports
// are TCP ports. Every command that reaches a server embeds TunnelFlags,
// so kong runs this for all of them.
func (f *TunnelFlags) Validate() error {
	switch f.Via {
	case "direct":
		if f.Server == "" {
			return errors.New("--via direct needs --server HOST:PORT")
		}
		if err := checkHostPort("server", f.Server, 1); err != nil {
			return err
		}
	case "ssm":
		if f.SSMTarget == "" && f.SSMServer == "" {
			return errors.New("--via ssm needs --ssm-target or --ssm-server to find the server's instance")
		}
		if err := checkPort("ssm-port", f.SSMPort); err != nil {
			return err
		}
		if f.SSMSessions < 1 || f.SSMSessions > ssmtun.MaxSessions {
			return fmt.Errorf("--ssm-sessions must be between 1 and %d, not %d", ssmtun.MaxSessions, f.SSMSessions)
		}
		if f.SSMDocument != "" && f.SSMHost != "" {
			return errors.New("--ssm-document pins the server's address on the node, so it cannot be combined with --ssm-host")
		}
		if f.SSMDocument != "" && !ssmtun.IsDocumentName(f.SSMDocument) {
			return fmt.Errorf("--ssm-document must be an SSM document name (3 to 128 letters, digits, _ . -) or a document's ARN, not %q", f.SSMDocument)
		}
	case "kube":
		if f.KubeDeployment == "" && f.KubeSelector == "" {
			return errors.New("--via kube needs --kube-deployment or --kube-selector to find the server's pods")
		}
		if err := checkPort("kube-port", f.KubePort); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks --port; 0 asks for any free port.
func (c *ConnectCmd) Validate() error {
	if c.Port != nil && (*c.Port < 0 || *c.Port > maxPort) {
		return fmt.Errorf("--port must be between 1 and %d, or 0 for any free port; not %d", maxPort, *c.Port)
	}
	return nil
}

// Validate checks the listen addresses; port 0 asks for any free port.
func (c *ServerCmd) Validate() error {
	if err := checkHostPort("listen", c.Listen, 0); err != nil {
		return err
	}
	return checkHostPort("admin-addr", c.AdminAddr, 0)
}

// checkPort rejects a port flag's value outside 1–65535.
func checkPort(flag string, port int) error {
	if port < 1 || port > maxPort {
		return fmt.Errorf("--%s must be between 1 and %d, not %d", flag, maxPort, port)
	}
	return nil
}

// checkHostPort rejects a HOST:PORT flag's value without a port, with a
// numeric port outside min–65535, or with a service name ("postgresql")
// this machine does not know.
func checkHostPort(flag, addr string, min int) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s must be HOST:PORT, not %q", flag, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("--%s %s: %q is neither a port number nor a service this machine knows", flag, addr, port)
		}
		return nil
	}
	if n < min || n > maxPort {
		return fmt.Errorf("--%s %s: the port must be between %d and %d", flag, addr, min, maxPort)
	}
	return nil
}
