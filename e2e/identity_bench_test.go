package e2e

import (
	"context"
	"net"
	"sync"
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
				tun, err := tunnel.NewDirect(slowLink(b, addr, 10*time.Millisecond), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				return tun
			}, tt.opts...)
			addr := st.local["app"]
			if tt.as != nil {
				addr = identityClient(b, &stack{serverAddr: slowLink(b, st.serverAddr, 10*time.Millisecond)}, "app", *tt.as, testServerID)
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

// slowLink forwards connections to addr, delaying every chunk by d in
// each direction, and returns its address.
func slowLink(t testing.TB, addr string, d time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(up, c, d) }()
			go func() { defer wg.Done(); delayCopy(c, up, d) }()
		}
	}()
	return ln.Addr().String()
}

// delayCopy copies src to dst, each chunk d after it was read, in order.
func delayCopy(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(d)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at)) // the link's latency, not synchronisation
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range ch {
	}
}
