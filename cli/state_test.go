package cli

import (
	"net"
	"testing"

	"github.com/rdsproxy/rdsproxy/discovery"
)

// Ports are remembered per server: "app" on prod and "app" on staging get
// ports of their own, can be served at the same time, and each comes back
// on its own port after a restart.
func TestPortsAreRememberedPerServer(t *testing.T) {
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	store := newStateStore()
	app := discovery.Target{Name: "app"}
	prod := &ConnectCmd{TunnelFlags: TunnelFlags{Via: "direct", Server: "prod.internal:5480"}, Address: "127.0.0.1"}
	staging := &ConnectCmd{TunnelFlags: TunnelFlags{Via: "direct", Server: "staging.internal:5480"}, Address: "127.0.0.1"}
	listen := func(c *ConnectCmd) net.Listener {
		t.Helper()
		ln, err := c.listen(app, store)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	port := func(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

	prodLn, stagingLn := listen(prod), listen(staging) // both at once
	prodPort, stagingPort := port(prodLn), port(stagingLn)
	prodLn.Close()
	stagingLn.Close()
	if prodPort == stagingPort {
		t.Fatalf("prod and staging app share port %d", prodPort)
	}
	stagingLn, prodLn = listen(staging), listen(prod) // restarted, in the other order
	defer stagingLn.Close()
	defer prodLn.Close()
	if port(prodLn) != prodPort || port(stagingLn) != stagingPort {
		t.Errorf("after a restart prod app is on %d (was %d), staging app on %d (was %d)",
			port(prodLn), prodPort, port(stagingLn), stagingPort)
	}
}
