package e2e

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// Verified caller identity (issue "Know who is connecting"): every
// connection carries a sts:GetCallerIdentity request signed with the
// token's credentials; the server has the sandbox STS verify it before
// any dial, applies rdsproxy:principals, and names the caller in the audit.

const testServerID = "e2e-server"

// Targets with principal rules; all reach the emulator's app endpoint.
func principalTargets() []discovery.Target {
	iam := func(name string, principals ...string) discovery.Target {
		return discovery.Target{Name: name, Endpoint: appEndpoint, Region: sandbox.Region, Auth: discovery.AuthIAM,
			TLS: discovery.TLSVerifyFull, Database: sandbox.DatabaseApp, Source: "static", Principals: principals}
	}
	return []discovery.Target{
		iam("admins", "arn:aws:iam::"+sandbox.STSAccount+":role/rdsproxy-admin"),
		iam("devs", "arn:aws:iam::"+sandbox.STSAccount+":role/AWSReservedSSO_Developer_*", "arn:aws:iam::*:user/sandbox"),
		iam("alice-only", "arn:aws:sts::"+sandbox.STSAccount+":assumed-role/AWSReservedSSO_Developer_*/alice@example.com"),
	}
}

// withIdentity turns identity on, verified by sts (the world's emulator
// when nil), with principalTargets added.
func withIdentity(t testing.TB, optional bool, endpoint string) stackOption {
	return func(c *server.Config) {
		withTargets(t, principalTargets(), nil)(c)
		if endpoint == "" {
			endpoint = sb.sts.URL()
		}
		c.Identity = &server.IdentityConfig{ServerID: testServerID, Region: sandbox.Region, Endpoint: endpoint, Optional: optional}
	}
}

// withAudit sends the server's log to buf as JSON (also to the run's log).
func withAudit(buf *logBuffer) stackOption {
	return func(c *server.Config) { c.Logger = buf.jsonLogger() }
}

// principalTokens signs IAM tokens with one principal's credentials and
// records them for the run's log scan.
type principalTokens struct{ creds aws.Credentials }

func (p principalTokens) Get(ctx context.Context, endpoint, region, user string) (string, error) {
	tok, err := iamtoken.SignAt(ctx, endpoint, region, user, p.creds, time.Now(), 15*time.Minute)
	if err == nil {
		sb.tokens.remember(tok)
	}
	return tok, err
}

// identityClient starts a client proxy for target that signs tokens and
// identities as p, for a server with the given id, and returns its address.
func identityClient(t testing.TB, st *stack, target string, p sandbox.STSPrincipal, serverID string) string {
	t.Helper()
	tgt := findTarget(t, target)
	tun, err := tunnel.NewDirect(st.serverAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	creds := credentials.NewStaticCredentialsProvider(p.AccessKeyID, p.SecretAccessKey, p.SessionToken)
	proxy, err := client.New(client.Config{Tunnel: tun, Target: tgt, Tokens: principalTokens{p.Credentials()},
		Identities: recordIdentities(client.NewIdentitySigner(creds, nil)),
		Server:     &callerid.ServerInfo{ServerID: serverID, Region: sandbox.Region, Required: true},
		Logger:     sb.logs.logger("client")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	return serve(t, &wg, func(ln net.Listener) error { return proxy.Serve(ctx, ln) })
}

func findTarget(t testing.TB, name string) discovery.Target {
	t.Helper()
	for _, tg := range append(principalTargets(), sb.targets...) {
		if tg.Name == name {
			return tg
		}
	}
	t.Fatalf("no target %s", name)
	return discovery.Target{}
}

// identityRecorder remembers every identity handed out, so tests can
// prove no log line holds a signature or a session token.
type identityRecorder struct {
	next client.Identities
	mu   sync.Mutex
	sigs map[string]bool
}

var identities = &identityRecorder{sigs: map[string]bool{}}

func recordIdentities(next client.Identities) client.Identities {
	return &identityRecorder{next: next, sigs: identities.sigs}
}

func (r *identityRecorder) Identity(ctx context.Context, s callerid.ServerInfo, keyID string) (string, error) {
	enc, err := r.next.Identity(ctx, s, keyID)
	if err == nil {
		rememberIdentity(enc)
	}
	return enc, err
}

func rememberIdentity(enc string) {
	req, err := callerid.Decode(enc)
	if err != nil {
		return
	}
	auth, err := callerid.ParseAuthorization(req.Authorization)
	if err != nil {
		return
	}
	identities.mu.Lock()
	identities.sigs[auth.Signature] = true
	identities.mu.Unlock()
}

// checkNoIdentitySecrets fails t if the run's log holds an identity's
// signature, an encoded identity, or a session token.
func checkNoIdentitySecrets(t testing.TB) {
	logs := sb.logs.String()
	identities.mu.Lock()
	defer identities.mu.Unlock()
	for sig := range identities.sigs {
		if strings.Contains(logs, sig) {
			t.Errorf("a log line holds an identity signature %.16s…", sig)
		}
	}
	for _, p := range sandbox.STSPrincipals() {
		if p.SessionToken != "" && strings.Contains(logs, p.SessionToken) {
			t.Errorf("a log line holds %s's session token", p.ARN)
		}
	}
}

// signIdentity signs an identity as p for serverID at at.
func signIdentity(t testing.TB, p sandbox.STSPrincipal, serverID string, at time.Time) string {
	t.Helper()
	req, err := callerid.Sign(context.Background(), p.Credentials(), sandbox.Region, serverID, at)
	if err != nil {
		t.Fatal(err)
	}
	enc := req.Encode()
	rememberIdentity(enc)
	return enc
}

// auditLines returns the "session end" lines of a JSON log.
func auditLines(t testing.TB, buf *logBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "session end" {
			out = append(out, m)
		}
	}
	return out
}

func TestIdentityPrincipalRules(t *testing.T) {
	t.Cleanup(func() { checkNoIdentitySecrets(t) })
	audit := &logBuffer{}
	st := startStack(t, withIdentity(t, false, ""), withAudit(audit))
	ctx := context.Background()
	tests := []struct {
		p      sandbox.STSPrincipal
		target string
		allow  bool
	}{
		{sandbox.PrincipalAdmin, "admins", true},
		{sandbox.PrincipalAdmin, "devs", false},
		{sandbox.PrincipalAdmin, "app", true}, // no rule: every verified caller
		{sandbox.PrincipalReader, "admins", false},
		{sandbox.PrincipalReader, "app", true},
		{sandbox.PrincipalSSO, "devs", true},
		{sandbox.PrincipalSSO, "alice-only", true},
		{sandbox.PrincipalSSO, "admins", false},
		{sandbox.PrincipalUser, "devs", true},
		{sandbox.PrincipalUser, "alice-only", false},
	}
	relayed := 0 // sessions the server relayed so far
	for _, tt := range tests {
		t.Run(tt.target+"/"+tt.p.ARN[strings.LastIndex(tt.p.ARN, ":")+1:], func(t *testing.T) {
			addr := identityClient(t, st, tt.target, tt.p, testServerID)
			before := sb.emu.Accepted()
			conn, err := pgx.ConnectConfig(ctx, localConfig(t, addr, sandbox.UserIAM))
			if !tt.allow {
				pgErr(t, err, "28000", "does not admit "+tt.p.ARN)
				if sb.emu.Accepted() != before {
					t.Fatalf("a refused principal was dialed upstream")
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
			// Its end on the server comes before this client proxy stops:
			// stopped first, the proxy could drop the Terminate, and the
			// server's cancel for a client that left without one would
			// count as a dial in the next case.
			relayed++
			waitFor(t, 20*time.Second, "the session's end on the server", func() bool {
				n := 0
				for _, l := range auditLines(t, audit) {
					if l["outcome"] == "ok" {
						n++
					}
				}
				return n >= relayed
			})
		})
	}
	want := map[string]bool{}
	for _, tt := range tests {
		want[tt.p.ARN+" "+tt.target+" "+map[bool]string{true: "ok", false: "refused"}[tt.allow]] = true
	}
	var sso map[string]any
	waitFor(t, 60*time.Second, "an audit line per session naming its verified ARN", func() bool {
		seen := map[string]bool{}
		for _, l := range auditLines(t, audit) {
			arn, _ := l["arn"].(string)
			target, _ := l["target"].(string)
			outcome, _ := l["outcome"].(string)
			if key := arn + " " + target + " " + outcome; want[key] {
				seen[key] = true
			}
			if arn == sandbox.PrincipalSSO.ARN {
				sso = l
			}
		}
		return len(seen) == len(want)
	})
	if sso["role_session"] != "alice@example.com" || sso["account"] != sandbox.STSAccount {
		t.Errorf("SSO audit line = %v, want role_session alice@example.com and account %s", sso, sandbox.STSAccount)
	}
}
