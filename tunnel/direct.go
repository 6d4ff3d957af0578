package tunnel

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Direct reaches the server at a TCP address the laptop can route to
// (a VPN, a peered network, or a local server in tests).
type Direct struct {
	addr   string
	dialer net.Dialer
}

var _ Tunnel = (*Direct)(nil)

// NewDirect returns a tunnel to addr (host:port).
func NewDirect(addr string, timeout time.Duration) (*Direct, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("server address %q is not host:port: %w", addr, err)
	}
	return &Direct{addr: addr, dialer: net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}}, nil
}

// Dial opens a TCP connection to the server.
func (d *Direct) Dial(ctx context.Context) (net.Conn, error) {
	c, err := d.dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, fmt.Errorf("dial rdsproxy server %s: %w", d.addr, err)
	}
	return c, nil
}

// Close does nothing: direct streams are independent TCP connections.
func (d *Direct) Close() error { return nil }
