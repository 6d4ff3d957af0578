package sandbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// TestVerifySigV4 checks the hand-written verifier against tokens signed by
// the AWS SDK (BuildAuthToken and PresignHTTP via iamtoken.SignAt), and that
// any change to a signed part, the secret or the signature is refused.
func TestVerifySigV4(t *testing.T) {
	ctx := context.Background()
	secrets := map[string]string{AccessKeyID: SecretAccessKey}
	creds := Credentials()
	at := time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)
	sign := func(endpoint, user string, c aws.Credentials) string {
		tok, err := iamtoken.SignAt(ctx, endpoint, Region, user, c, at, 15*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	built, err := iamtoken.Build(ctx, "db.example:5432", Region, "iam user",
		credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""))
	if err != nil {
		t.Fatal(err)
	}
	good := sign("db.example:5432", "u", creds)
	withSession := creds
	withSession.SessionToken = "FwoGZXIvYXdz+/=session token"
	flip := func(s string) string { // change the last hex digit of the signature
		last := s[len(s)-1]
		repl := "0"
		if last == '0' {
			repl = "1"
		}
		return s[:len(s)-1] + repl
	}

	tests := []struct {
		name    string
		token   string
		secrets map[string]string
		ok      bool
	}{
		{"BuildAuthToken", built, secrets, true},
		{"SignAt", good, secrets, true},
		{"CLI shape host:port/?", strings.Replace(good, "?", "/?", 1), secrets, true},
		{"session token", sign("db.example:5432", "u", withSession), secrets, true},
		{"odd user", sign("db.example:5432", "ü+/= &x~", creds), secrets, true},
		{"ipv6 host", sign("[::1]:5432", "u", creds), secrets, true},
		{"port 443", sign("db.example:443", "u", creds), secrets, true},
		{"flipped signature", flip(good), secrets, false},
		{"other user", strings.Replace(good, "DBUser=u&", "DBUser=v&", 1), secrets, false},
		{"other host", strings.Replace(good, "db.example:5432", "db.exampla:5432", 1), secrets, false},
		{"other port", strings.Replace(good, ":5432", ":5433", 1), secrets, false},
		{"longer lifetime", strings.Replace(good, "X-Amz-Expires=900", "X-Amz-Expires=9000", 1), secrets, false},
		{"extra parameter", strings.Replace(good, "&X-Amz-Signature", "&Extra=1&X-Amz-Signature", 1), secrets, false},
		{"two signatures", good + "&X-Amz-Signature=00", secrets, false},
		{"wrong secret", good, map[string]string{AccessKeyID: "not the secret"}, false},
		{"unknown key", good, map[string]string{"AKIAOTHER": SecretAccessKey}, false},
		{"garbage", "not a token", secrets, false},
		{"bad escape", good + "&%zz=1", secrets, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifySigV4(tt.token, tt.secrets)
			if (err == nil) != tt.ok {
				t.Fatalf("verifySigV4 = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "X-Amz-Signature=") {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
}
