package cli

import (
	"net"
	"os"
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

// A state file from before the list of recent listeners keeps its one
// entry when a newer connect adds its own: that older connect may still
// serve.
func TestRecentListenersKeepTheOldEntry(t *testing.T) {
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	s := newStateStore()
	old := `{"ports_by_server": {}, "targets": [], "served_by_server": {"direct a:1": {"orders": {"target": "orders", "host": "127.0.0.1", "port": 15432}}}}`
	if err := os.WriteFile(s.path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.rememberServed("direct a:1", connInfo{Target: "orders", Host: "127.0.0.1", Port: 40283}); err != nil {
		t.Fatal(err)
	}
	recent, err := s.servedRecently("direct a:1", "orders")
	if err != nil || len(recent) != 2 || recent[0].Port != 40283 || recent[1].Port != 15432 {
		t.Fatalf("recent listeners %+v, %v; want 40283, then the old file's 15432", recent, err)
	}
}
