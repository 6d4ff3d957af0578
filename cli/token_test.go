package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// rdsproxy token signs for the endpoint and region the server lists, with
// the local identity, for the user asked for.
func TestTokenCommand(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATESTTOKEN0000001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_REGION", "eu-central-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
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
