package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// stripedSSM starts the SSM endpoint with 5% of frames dropped and 5%
// reordered, and a client tunnel of sessions sessions through it, plus the
// lane, as `connect --ssm-sessions N` runs it.
func stripedSSM(t testing.TB, serverAddr string, sessions int) (tunnel.Tunnel, *ssmendpoint.Endpoint) {
	endpoint, err := ssmendpoint.Start(context.Background(), ssmendpoint.Config{
		Logger:  sb.logs.logger("ssm-endpoint"),
		Targets: []string{"i-0123456789abcdef0"}, Dest: serverAddr, ResumeGrace: 30 * time.Second, Unpaced: true,
		Faults: ssmendpoint.Faults{DropPercent: 5, ReorderPercent: 5, Seed: 7}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { endpoint.Close() })
	api := awsssm.New(awsssm.Options{Region: sandbox.Region, BaseEndpoint: aws.String(endpoint.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(sandbox.AccessKeyID, sandbox.SecretAccessKey, "")})
	tun, err := ssmtun.New(context.Background(), ssmtun.Config{API: api, Target: "i-0123456789abcdef0", Port: 5480,
		Sessions: sessions, Lane: true, Logger: sb.logs.logger("ssm-client")})
	if err != nil {
		t.Fatal(err)
	}
	return tun, endpoint
}

// TestViaSSMStriped: with --ssm-sessions 4 every connection is striped
// over the four sessions and the lane, and compressed, through an endpoint
// that drops and reorders frames: the tunnel suite's 16 checksummed COPYs
// each way and its cancel, then COPYs through a websocket cut that
// ResumeSession heals, without a byte lost or doubled. Each session's
// audit line names the mode (with the lane) and its five stripes, and the
// endpoint saw no protocol violation.
func TestViaSSMStriped(t *testing.T) {
	var endpoint *ssmendpoint.Endpoint
	audit := &logBuffer{}
	st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		var tun tunnel.Tunnel
		tun, endpoint = stripedSSM(t, serverAddr, 4)
		return tun
	}, func(c *client.Config) { c.Striping = true }, func(c *server.Config) { c.Logger = audit.jsonLogger() })
	tunnelSuite(t, st)

	// Stripes join in the background; each COPY session stays open until
	// all four sessions' stripes have joined, however loaded the machine.
	joined := joinsLogged(audit) + 4*4
	allJoined := func() error { return awaitJoins(audit, joined) }
	var g errgroup.Group
	for i := range 4 {
		g.Go(func() error {
			return copyRoundTrip(st.local["app"], fmt.Sprintf("tun_copy_%d", 100+i), 8<<20, allJoined)
		})
	}
	// Cut once a COPY is under way, however long the sessions take to start.
	waitFor(t, 30*time.Second, "a COPY under way", func() bool { return statementRunning(t, "COPY tun_copy_10") })
	if cut := endpoint.CutWebsockets(); cut == 0 {
		t.Error("no websocket to cut")
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("COPYs through a websocket cut: %v", err)
	}
	if v := endpoint.Violations(); len(v) > 0 {
		t.Fatalf("protocol violations seen by the SSM endpoint: %q", v)
	}
	if s := endpoint.Stats(); s.SessionsStarted != 5 || s.Reconnects == 0 {
		t.Errorf("endpoint stats %+v: want 5 sessions (4 and the lane), and resumed websockets", s)
	}
	// Stripes join in the background: the suite's sessions may end before
	// all have; the four 8 MB COPY sessions above waited for theirs.
	var copies []map[string]any
	waitFor(t, 20*time.Second, "the audit lines of the four 8 MB COPY sessions", func() bool {
		copies = copies[:0]
		for _, l := range waitAuditLines(t, audit, 16) {
			if l["transport"] != "v=1;k=5;z=zstd;l=1" {
				t.Fatalf("audit line %v: want transport v=1;k=5;z=zstd;l=1", l)
			}
			if copied, _ := l["bytes_from_client"].(float64); copied > 6<<20 {
				copies = append(copies, l)
			}
		}
		return len(copies) == 4
	})
	for _, l := range copies {
		if l["stripes"] != float64(5) {
			t.Fatalf("audit line %v: want the COPY session over 5 stripes", l)
		}
	}
}

// TestStripingServerWithout: a client that offers striping to a server
// that does not take it (NoStriping, as a server from before striping)
// keeps the raw stream, and its audit line says so.
func TestStripingServerWithout(t *testing.T) {
	audit := &logBuffer{}
	st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, _ := stripedSSM(t, serverAddr, 2)
		return tun
	}, func(c *client.Config) { c.Striping = true }, func(c *server.Config) { c.NoStriping = true; c.Logger = audit.jsonLogger() })
	if err := copyBothWays(st.local["app"], 200, 4); err != nil {
		t.Fatal(err)
	}
	for _, l := range waitAuditLines(t, audit, 1) {
		if l["transport"] != "raw" || l["stripes"] != nil {
			t.Fatalf("audit line %v: want the raw stream", l)
		}
	}
}

// TestStripingSmallMessages: thousands of small queries, each a round
// trip through a striped, compressed connection, answer in order.
func TestStripingSmallMessages(t *testing.T) {
	st := startStackWith(t, func(t testing.TB, serverAddr string) tunnel.Tunnel {
		tun, _ := stripedSSM(t, serverAddr, 3)
		return tun
	}, func(c *client.Config) { c.Striping = true })
	conn := connectLocal(t, st.local["app"], sandbox.UserIAM)
	ctx := context.Background()
	for i := range 2000 {
		var got string
		if err := conn.QueryRow(ctx, "SELECT $1::text", fmt.Sprint(i)).Scan(&got); err != nil || got != fmt.Sprint(i) {
			t.Fatalf("query %d: %q, %v", i, got, err)
		}
	}
}
