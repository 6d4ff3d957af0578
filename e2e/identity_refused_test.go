package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
)

// Forged, expired, replayed (as signed, or with the server id rewritten)
// and mismatched identities are refused, each with its own SQLSTATE or
// reason and sentence, and none reaches the database.
func TestIdentityRefusedBeforeAnyDial(t *testing.T) {
	t.Cleanup(func() { checkNoIdentitySecrets(t) })
	st := startStack(t, withIdentity(t, false, ""))
	down := startStack(t, withIdentity(t, false, "http://"+closedAddr()))
	ctx := context.Background()
	now := time.Now()
	forged := sandbox.PrincipalAdmin
	forged.SecretAccessKey = "made-up-secret"
	tests := []struct {
		name, addr string
		tokenAs    sandbox.STSPrincipal
		identity   string
		code, want string
	}{
		{"forged signature", st.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, forged, testServerID, now),
			"28P01", "AWS STS refused the caller identity: SignatureDoesNotMatch"},
		{"expired", st.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, sandbox.PrincipalAdmin, testServerID, now.Add(-20*time.Minute)),
			"28000", "the caller identity expired: it was signed 20m"},
		{"dated in the future", st.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, sandbox.PrincipalAdmin, testServerID, now.Add(10*time.Minute)),
			"28000", "in the future"},
		{"replayed to another server", st.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, sandbox.PrincipalAdmin, "another-server", now),
			"28000", `signed for server "another-server", not for this server ("e2e-server")`},
		{"replayed with the server id rewritten", st.serverAddr, sandbox.PrincipalAdmin,
			rewriteServerID(t, signIdentity(t, sandbox.PrincipalAdmin, "another-server", now), testServerID),
			"28P01", "AWS STS refused the caller identity: SignatureDoesNotMatch"},
		{"token and identity from different keys", st.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, sandbox.PrincipalReader, testServerID, now),
			"28000", "signed with access key " + sandbox.PrincipalReader.AccessKeyID + " but the IAM token with " + sandbox.PrincipalAdmin.AccessKeyID},
		{"malformed", st.serverAddr, sandbox.PrincipalAdmin, "not*base64",
			"08P01", "the caller identity (rdsproxy.identity) is malformed: identity is not base64url"},
		{"missing", st.serverAddr, sandbox.PrincipalAdmin, "",
			"28000", "this server requires a verified caller identity, and the connection carries none"},
		{"STS unreachable", down.serverAddr, sandbox.PrincipalAdmin, signIdentity(t, sandbox.PrincipalAdmin, testServerID, now),
			"08001", "cannot verify the caller identity: AWS STS is unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := principalTokens{tt.tokenAs.Credentials()}.Get(ctx, appEndpoint, sandbox.Region, sandbox.UserIAM)
			if err != nil {
				t.Fatal(err)
			}
			cfg := serverConfig(t, tt.addr, "app", sandbox.UserIAM, tok)
			if tt.identity != "" {
				cfg.RuntimeParams[callerid.Param] = tt.identity
			}
			before := sb.emu.Accepted()
			_, err = pgx.ConnectConfig(ctx, cfg)
			pgErr(t, err, tt.code, tt.want)
			if sb.emu.Accepted() != before {
				t.Fatal("the refused identity was dialed upstream")
			}
		})
	}
}

// rewriteServerID edits the server id an encoded identity names, keeping
// its signature, as someone replaying a captured identity to another
// server would: the id is a signed header, so STS refuses the signature.
func rewriteServerID(t testing.TB, enc, serverID string) string {
	t.Helper()
	req, err := callerid.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	req.Headers[strings.ToLower(callerid.ServerIDHeader)] = serverID
	return req.Encode()
}

// Clients that predate identity keep working while the server does not
// require it, and are told why otherwise. A target with a principal rule
// admits only verified callers either way.
func TestIdentityOldClients(t *testing.T) {
	ctx := context.Background()
	lenient := startStack(t, withIdentity(t, true, ""))
	conn := connectLocal(t, lenient.local["app"], sandbox.UserIAM) // the stack's clients send no identity
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	tok := sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC())
	before := sb.emu.Accepted()
	_, err := pgx.ConnectConfig(ctx, serverConfig(t, lenient.serverAddr, "admins", sandbox.UserIAM, tok))
	pgErr(t, err, "28000", `target "admins" admits only verified AWS principals, and the connection carries no identity`)

	strict := startStack(t, withIdentity(t, false, ""))
	_, err = connectLocalErr(strict.local["app"], sandbox.UserIAM)
	pgErr(t, err, "28000", "this server requires a verified caller identity")
	if sb.emu.Accepted() != before {
		t.Fatal("a connection without identity was dialed upstream")
	}
}

// The binary server requires identity unless told otherwise
// (--require-identity defaults to true): a connection without one is
// refused with a sentence, one with an identity STS verifies is served.
func TestIdentityRequiredByDefault(t *testing.T) {
	world := startTestWorld(t)
	s := startBinaryServer(t, world) // the world's configuration says nothing about identity
	cfg, err := newLocalConfig(s.addr, sandbox.UserIAM)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["rdsproxy.target"] = "orders"
	if cfg.Password, err = signWorldToken(worldEndpoint(world, "orders")); err != nil {
		t.Fatal(err)
	}
	_, err = pgx.ConnectConfig(context.Background(), cfg)
	pgErr(t, err, "28000", "this server requires a verified caller identity, and the connection carries none")
	connectDiscovered(t, world, s.addr, "orders").Close(context.Background())
}

// The server asks STS once per signed identity: a client reuses its
// identity, so only its first connection waits for STS.
func TestIdentityCacheSparesSTS(t *testing.T) {
	sts, err := sandbox.StartSTS(t.Context(), sandbox.STSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	st := startStack(t, withIdentity(t, false, sts.URL()))
	addr := identityClient(t, st, "app", sandbox.PrincipalSSO, testServerID)
	for range 5 {
		connectLocal(t, addr, sandbox.UserIAM).Close(context.Background())
	}
	if got := sts.Calls(); got != 1 {
		t.Errorf("STS calls for 5 connections with one identity = %d, want 1", got)
	}
}

// A client whose server id is stale (its Kubernetes port-forward moved to
// a replica with another id) learns the new id and connects, and the
// stale identity was refused before any dial.
func TestIdentityClientRelearnsTheServerID(t *testing.T) {
	t.Cleanup(func() { checkNoIdentitySecrets(t) })
	audit := &logBuffer{}
	st := startStack(t, withIdentity(t, false, ""), withAudit(audit))
	addr := identityClient(t, st, "app", sandbox.PrincipalReader, "the-replica-that-went-away")
	conn := connectLocal(t, addr, sandbox.UserIAM)
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(audit.String(), `"reason":"identity-wrong-server"`) {
		t.Errorf("the stale identity was not refused first:\n%s", audit.String())
	}
}

// Identities STS refuses spend the caller's failed-login budget, which is
// checked before STS is asked: a forger cannot make the server call STS
// (or dial the database) at will.
func TestForgedIdentitiesAreThrottled(t *testing.T) {
	sts, err := sandbox.StartSTS(t.Context(), sandbox.STSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	st := startStack(t, withIdentity(t, false, sts.URL()), func(c *server.Config) {
		c.AuthFailures = server.AuthFailureLimit{PerKey: 2, PerKeyRate: 0.001, PerSource: 1000, PerSourceRate: 1000}
	})
	ctx := context.Background()
	forged := sandbox.PrincipalAdmin
	forged.SecretAccessKey = "guessed"
	try := func() error {
		tok, err := principalTokens{sandbox.PrincipalAdmin.Credentials()}.Get(ctx, appEndpoint, sandbox.Region, sandbox.UserIAM)
		if err != nil {
			t.Fatal(err)
		}
		cfg := serverConfig(t, st.serverAddr, "app", sandbox.UserIAM, tok)
		cfg.RuntimeParams[callerid.Param] = signIdentity(t, forged, testServerID, time.Now())
		_, err = pgx.ConnectConfig(ctx, cfg)
		return err
	}
	before := sb.emu.Accepted()
	for range 2 {
		pgErr(t, try(), "28P01", "AWS STS refused the caller identity: SignatureDoesNotMatch")
	}
	calls := sts.Calls()
	for range 3 {
		pgErr(t, try(), "28P01", "too many failed logins from this access key")
	}
	if sts.Calls() != calls || calls != 2 {
		t.Errorf("STS calls: %d for the budget, %d more after it was spent; want 2 and 0", calls, sts.Calls()-calls)
	}
	if sb.emu.Accepted() != before {
		t.Error("a forged identity was dialed upstream")
	}
}
