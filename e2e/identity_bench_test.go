package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// BenchmarkIdentityConnect measures connection setup (connect, startup,
// login to ReadyForQuery) through a tunnel that adds 10 ms each way, so a
// round trip costs 20 ms: without identity, with identity and the
// server's STS cache warm, and cold (every connection asks STS). Identity
// travels in the startup's write, so warm costs no more than none.
//
//	go test -run XXX -bench IdentityConnect -benchtime 20x ./e2e/
func BenchmarkIdentityConnect(b *testing.B) {
	for _, tt := range []struct {
		name string
		opts []stackOption
		as   *sandbox.STSPrincipal
	}{
		{"no-identity", nil, nil},
		{"identity-warm", []stackOption{withIdentity(b, false, "")}, &sandbox.PrincipalSSO},
		{"identity-cold", []stackOption{withIdentity(b, false, ""), func(c *server.Config) { c.Identity.CacheTTL = time.Nanosecond }}, &sandbox.PrincipalSSO},
	} {
		b.Run(tt.name, func(b *testing.B) {
			st := startStackVia(b, func(b testing.TB, addr string) tunnel.Tunnel {
				tun, err := tunnel.NewDirect((&link{delay: 10 * time.Millisecond}).start(b, addr), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				return tun
			}, tt.opts...)
			addr := st.local["app"]
			if tt.as != nil {
				addr = identityClient(b, &stack{serverAddr: (&link{delay: 10 * time.Millisecond}).start(b, st.serverAddr)}, "app", *tt.as, testServerID)
			}
			connectLocal(b, addr, sandbox.UserIAM).Close(context.Background()) // tokens and identities signed, caches warm
			stsBefore := sb.sts.Calls()
			b.ResetTimer()
			for range b.N {
				connectLocal(b, addr, sandbox.UserIAM).Close(context.Background())
			}
			b.StopTimer()
			b.ReportMetric(float64(sb.sts.Calls()-stsBefore)/float64(b.N), "sts-calls/op")
		})
	}
}
