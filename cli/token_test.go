package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// rdsproxy token signs for the endpoint and region the server lists, with
// the local identity, for the user asked for.
func TestTokenCommand(t *testing.T) {
	isolatedUser(t, "AKIATESTTOKEN0000001", "eu-central-1")
	addr := startListServer(t, "orders")
	var out, errOut bytes.Buffer
	if code := Run([]string{"token", "orders", "--via", "direct", "--server", addr, "--user", "alice"}, Env{Stdout: &out, Stderr: &errOut}); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	tok, err := iamtoken.Parse(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	err = tok.Check(iamtoken.Expect{Endpoint: "orders.example:5432", User: "alice", Region: "us-east-1", Now: time.Now(), Skew: time.Minute})
	if err != nil || tok.AccessKeyID != "AKIATESTTOKEN0000001" {
		t.Fatalf("token for %s by %s: %v", tok.Endpoint(), tok.AccessKeyID, err)
	}
}

// A token for a user the target does not serve is signed (RDS itself may
// take it), with a warning that the rdsproxy server will refuse it; a
// served user gets no warning.
func TestTokenWarnsForAUserTheServerRefuses(t *testing.T) {
	isolatedUser(t, "AKIATESTTOKEN0000001", "eu-central-1")
	addr := startListServer(t, "orders", "iam_user", "iam_other")
	for _, tc := range []struct{ user, warn string }{
		{"bob", `the target does not serve this database user" target=orders user=bob served=iam_user,iam_other`},
		{"iam_other", ""},
	} {
		var out, errOut bytes.Buffer
		if code := Run([]string{"token", "orders", "--via", "direct", "--server", addr, "--user", tc.user}, Env{Stdout: &out, Stderr: &errOut}); code != ExitOK {
			t.Fatalf("--user %s: exit %d: %s", tc.user, code, errOut.String())
		}
		if _, err := iamtoken.Parse(strings.TrimSpace(out.String())); err != nil {
			t.Fatalf("--user %s: no token: %v", tc.user, err)
		}
		if warned := strings.Contains(errOut.String(), "will refuse"); warned != (tc.warn != "") || !strings.Contains(errOut.String(), tc.warn) {
			t.Fatalf("--user %s: stderr %q, want the warning %q", tc.user, errOut.String(), tc.warn)
		}
	}
}

// isolatedUser gives the test a home and state directory of its own and
// static AWS credentials with access key id key, in region.
func isolatedUser(t *testing.T, key, region string) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	t.Setenv("AWS_ACCESS_KEY_ID", key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_REGION", region)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// A command resolves AWS credentials once: the token signer and the SSM
// tunnel share one configuration, so a profile's credential_process (or
// assume-role call, or MFA prompt) runs once, not once per user.
func TestAWSCredentialsResolvedOnce(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "credentials"))
	runs := filepath.Join(home, "runs")
	script := filepath.Join(home, "creds.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho run >> "+runs+"\n"+
		`echo '{"Version":1,"AccessKeyId":"AKIAPROCESS000000001","SecretAccessKey":"s"}'`+"\n"), 0o700)
	os.WriteFile(filepath.Join(home, "config"),
		[]byte("[profile dev]\nregion = eu-central-1\ncredential_process = "+script+"\n"), 0o600)

	f := &SSMFlags{Profile: "dev"}
	if _, err := f.tokenSource(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the token signer's and the tunnel's view of the same command
		cfg, err := f.awsConfig(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if creds, err := cfg.Credentials.Retrieve(t.Context()); err != nil || creds.AccessKeyID != "AKIAPROCESS000000001" {
			t.Fatalf("credentials %v, %v", creds.AccessKeyID, err)
		}
	}
	b, _ := os.ReadFile(runs)
	if n := strings.Count(string(b), "run"); n != 1 {
		t.Errorf("credential_process ran %d times in one command, want 1", n)
	}
}
