package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// tunnelSuite is what every transport must carry: psql, 16 concurrent pgx
// sessions each moving a checksummed COPY both ways, and a cancel.
func tunnelSuite(t *testing.T, st *stack) {
	ctx := context.Background()
	out, err := psql(t, ctx, st.local["app"], sandbox.UserIAM, "-c", "SELECT current_user")
	if err != nil || strings.TrimSpace(out) != sandbox.UserIAM {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	const sessions, mb = 16, 4
	var g errgroup.Group
	for i := range sessions {
		g.Go(func() error { return copyBothWays(st.local["app"], i, mb) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// Over a lossy tunnel after the COPYs, a query may take seconds to
	// arrive: cancelWhileRunning cancels once it runs.
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	cancelWhileRunning(t, conn, "SELECT pg_sleep(60) /* tunnel suite */")
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("session unusable after cancel: %v", err)
	}
}

// copyBothWays copies mb MiB into a table of its own and back out through
// the proxy, comparing SHA-256 sums.
func copyBothWays(addr string, i, mb int) error {
	return copyRoundTrip(addr, fmt.Sprintf("tun_copy_%d", i), int64(mb)<<20, nil)
}

// copyRoundTrip copies size bytes of rows into table (made anew) and back
// out over one new session through the proxy at addr, comparing SHA-256
// sums, then calls beforeEnd (when not nil) while the session is still open.
func copyRoundTrip(addr, table string, size int64, beforeEnd func() error) error {
	ctx := context.Background()
	conn, err := connectLocalErr(addr, sandbox.UserIAM)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id bigint, payload text)", table, table)); err != nil {
		return err
	}
	sent, back := sha256.New(), sha256.New()
	if _, err := conn.PgConn().CopyFrom(ctx, io.TeeReader(newRowSource(size), sent), "COPY "+table+" FROM STDIN"); err != nil {
		return fmt.Errorf("%s COPY in: %w", table, err)
	}
	if _, err := conn.PgConn().CopyTo(ctx, back, "COPY (SELECT * FROM "+table+" ORDER BY id) TO STDOUT"); err != nil {
		return fmt.Errorf("%s COPY out: %w", table, err)
	}
	if !bytes.Equal(sent.Sum(nil), back.Sum(nil)) {
		return fmt.Errorf("%s: COPY out differs from COPY in", table)
	}
	if beforeEnd != nil {
		return beforeEnd()
	}
	return nil
}

// --via kube through the fake API server, on websocket and on the SPDY
// fallback; then a rollout to a new pod without restarting the client.
func TestViaKube(t *testing.T) {
	for _, transport := range []string{"websocket", "spdy"} {
		t.Run(transport, func(t *testing.T) {
			var api *kubeapi.Server
			st := startStackVia(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
				var err error
				api, err = kubeapi.Start(kubeapi.Config{Target: serverAddr})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(api.Close)
				api.RefuseWebsocket(transport == "spdy")
				tun, err := kube.New(context.Background(), kube.Config{RESTConfig: api.RESTConfig(api.Token()),
					Namespace: api.Namespace(), Deployment: api.Deployment(), Port: 5480})
				if err != nil {
					t.Fatal(err)
				}
				return tun
			})
			tunnelSuite(t, st)
			if got := api.Upgrades()[transport]; got == 0 {
				t.Errorf("no %s upgrade happened: %v", transport, api.Upgrades())
			}
			// The pod goes away; the next connection lands on the new one.
			api.Rollout(st.serverAddr, true)
			conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
			if err := conn.Ping(context.Background()); err != nil {
				t.Fatalf("after rollout: %v", err)
			}
		})
	}
}

// --via ssm through the project's SSM endpoint with 5% of frames dropped
// and 5% reordered: psql, 16 concurrent sessions over one Session Manager
// session each moving a checksummed COPY both ways (64 MB in all each way),
// and a cancel. The endpoint checks every client frame against the protocol.
// Like the real service, the endpoint keeps a session open for
// ResumeSession when its websocket drops, so a dropped websocket under load
// is healed by the client's resume instead of ending every stream.
func TestViaSSM(t *testing.T) {
	var endpoint *ssmendpoint.Endpoint
	st := startStackVia(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		var err error
		endpoint, err = ssmendpoint.Start(context.Background(), ssmendpoint.Config{
			Logger:  sb.logs.logger("ssm-endpoint"),
			Targets: []string{"i-0123456789abcdef0"}, Dest: serverAddr, ResumeGrace: 30 * time.Second, Unpaced: true,
			Faults: ssmendpoint.Faults{DropPercent: 5, ReorderPercent: 5, Seed: 1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { endpoint.Close() })
		api := awsssm.New(awsssm.Options{Region: sandbox.Region, BaseEndpoint: aws.String(endpoint.URL()),
			Credentials: credentials.NewStaticCredentialsProvider(sandbox.AccessKeyID, sandbox.SecretAccessKey, "")})
		tun, err := ssmtun.New(context.Background(), ssmtun.Config{API: api, Target: "i-0123456789abcdef0", Port: 5480,
			Logger: sb.logs.logger("ssm-client")})
		if err != nil {
			t.Fatal(err)
		}
		return tun
	})
	tunnelSuite(t, st)
	if v := endpoint.Violations(); len(v) > 0 {
		t.Fatalf("protocol violations seen by the SSM endpoint: %q", v)
	}
	if s := endpoint.Stats(); s.SessionsStarted != 1 {
		t.Errorf("sessions started = %d, want every connection over one session", s.SessionsStarted)
	}
}
