package client_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// rotating is a credentials provider whose keys the test changes.
type rotating struct{ creds aws.Credentials }

func (r *rotating) Retrieve(context.Context) (aws.Credentials, error) { return r.creds, nil }

func ssoCreds(key string, tokenLen int) aws.Credentials {
	return aws.Credentials{AccessKeyID: key, SecretAccessKey: "secret-" + key,
		SessionToken: strings.Repeat("T", tokenLen), CanExpire: true, Expires: time.Now().Add(time.Hour)}
}

var server = callerid.ServerInfo{ServerID: "rdsproxy-prod-eu", Region: "eu-west-1", Required: true}

// A StartupMessage with the identity of a long SSO session (a 4 KiB
// session token; IAM Identity Center's are usually about 1 KiB) stays
// under the server's 10,000-byte limit, with room for the user's own
// parameters. The token travels in its own PasswordMessage.
func TestIdentityFitsTheStartupLimit(t *testing.T) {
	s := client.NewIdentitySigner(&rotating{ssoCreds("ASIAEXAMPLELONGSSO01", 4096)}, nil)
	enc, err := s.Identity(t.Context(), server, "")
	if err != nil {
		t.Fatal(err)
	}
	params := pgwire.Params{{Key: "user", Value: "alice_readonly_analytics"}, {Key: "database", Value: "warehouse_production"},
		{Key: "application_name", Value: "DBeaver 24.1.0 - SQLEditor <Script-12.sql>"}, {Key: "client_encoding", Value: "UTF8"},
		{Key: "options", Value: "-c search_path=analytics,public -c statement_timeout=300000"},
		{Key: pgwire.TargetParam, Value: "warehouse-production-reader-ro.eu-west-1"}, {Key: callerid.Param, Value: enc}}
	size := len(pgwire.AppendStartup(nil, pgwire.Protocol30, params))
	t.Logf("identity %d bytes, startup %d bytes (limit %d)", len(enc), size, pgwire.DefaultMaxStartupSize)
	if size > pgwire.DefaultMaxStartupSize-1500 {
		t.Errorf("startup with a 4 KiB session token is %d bytes; want at least 1,500 bytes below the %d limit", size, pgwire.DefaultMaxStartupSize)
	}
	if _, err := client.NewIdentitySigner(&rotating{ssoCreds("ASIAEXAMPLELONGSSO01", 6000)}, nil).Identity(t.Context(), server, ""); err == nil ||
		!strings.Contains(err.Error(), "longer than") {
		t.Errorf("a 6,000-byte session token: err = %v, want a sentence saying the identity is too long", err)
	}
}

func decodeAuth(t *testing.T, enc string) (callerid.Request, callerid.Authorization) {
	t.Helper()
	req, err := callerid.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := callerid.ParseAuthorization(req.Authorization)
	if err != nil {
		t.Fatal(err)
	}
	return req, auth
}

// The identity is bound to the server and region, reused for a while,
// and signed with the key of the IAM token even after the provider
// rotated its credentials.
func TestIdentitySignerReusesAndFollowsTheTokensKey(t *testing.T) {
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	creds := &rotating{ssoCreds("ASIAOLDKEY0000000001", 100)}
	s := client.NewIdentitySigner(creds, func() time.Time { return now })
	first, err := s.Identity(t.Context(), server, "ASIAOLDKEY0000000001")
	if err != nil {
		t.Fatal(err)
	}
	req, auth := decodeAuth(t, first)
	if req.Headers["x-rdsproxy-server-id"] != server.ServerID || req.Headers["host"] != "sts.eu-west-1.amazonaws.com" ||
		auth.Region != "eu-west-1" || auth.Service != "sts" || !auth.Signs("x-rdsproxy-server-id") || !auth.Signs("x-amz-security-token") {
		t.Errorf("identity = %+v, %+v; want it bound to %s in eu-west-1", req.Headers, auth, server.ServerID)
	}
	now = now.Add(time.Minute)
	if again, _ := s.Identity(t.Context(), server, "ASIAOLDKEY0000000001"); again != first {
		t.Error("a one-minute-old identity was not reused")
	}
	creds.creds = ssoCreds("ASIANEWKEY0000000002", 100)
	now = now.Add(5 * time.Minute)
	old, err := s.Identity(t.Context(), server, "ASIAOLDKEY0000000001")
	if err != nil {
		t.Fatalf("a token from before the rotation: %v", err)
	}
	if _, auth := decodeAuth(t, old); auth.AccessKeyID != "ASIAOLDKEY0000000001" || old == first {
		t.Errorf("re-signed identity uses %s (same as before: %v), want a fresh one from the token's key", auth.AccessKeyID, old == first)
	}
	fresh, _ := s.Identity(t.Context(), server, "ASIANEWKEY0000000002")
	if _, auth := decodeAuth(t, fresh); auth.AccessKeyID != "ASIANEWKEY0000000002" {
		t.Errorf("identity for the new token uses %s", auth.AccessKeyID)
	}
	if _, err := s.Identity(t.Context(), server, "ASIANEVERSEEN0000003"); err == nil {
		t.Error("an identity for a key the signer never had: want an error")
	}
}

// fakeIdentities hands out "identity-for-KEY" and records what it signed for.
type fakeIdentities struct {
	mu    sync.Mutex
	asked []string
}

func (f *fakeIdentities) Identity(_ context.Context, s callerid.ServerInfo, keyID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, s.ServerID+" "+s.Region+" "+keyID)
	return "identity-for-" + keyID, nil
}

// The identity costs no round trip: the startup carrying it and the IAM
// token reach the server in one write, before the server has said a
// word, and the identity is signed for the server with the token's key.
// The server's verdict after the token is what reaches the local client.
func TestIdentityTravelsInTheStartupWrite(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "ASIAPIPELINED0000001", SecretAccessKey: "s", SessionToken: "t"}
	token, err := iamtoken.SignAt(t.Context(), iamTarget.Endpoint, iamTarget.Region, "alice", creds, time.Now(), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ids := &fakeIdentities{}
	ln, tun := startProxy(t, client.Config{Target: iamTarget, Tokens: &fixedTokens{token: token}, Identities: ids, Server: &server})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice", "database", "app"))
	srv := tun.next(t)
	buf := make([]byte, 64<<10)
	n, err := srv.Read(buf) // a net.Pipe read returns at most one write
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(buf[:n])
	st, err := pgwire.ReadStartup(r, pgwire.DefaultMaxStartupSize)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Params.Get(callerid.Param); got != "identity-for-"+creds.AccessKeyID {
		t.Errorf("%s = %q, want the identity signed with the token's key", callerid.Param, got)
	}
	pw, err := pgwire.ReadMessage(r, nil, 1<<16)
	if tok, _ := pgwire.PasswordText(pw); err != nil || tok != token {
		t.Fatalf("the first write holds %d bytes: a startup and then %v %v, want the token in the same write", n, pw.Type, err)
	}
	ids.mu.Lock()
	if want := server.ServerID + " " + server.Region + " " + creds.AccessKeyID; len(ids.asked) != 1 || ids.asked[0] != want {
		t.Errorf("identities signed for %q, want [%q]", ids.asked, want)
	}
	ids.mu.Unlock()
	write(t, srv, pgwire.AppendAuthCleartext(nil))
	write(t, srv, appendAuthOK(nil))
	if m := readMsg(t, local); m.AuthCode() != pgwire.AuthOK {
		t.Fatalf("local got %q (auth code %d), want AuthenticationOk", m.Type, m.AuthCode())
	}
}
