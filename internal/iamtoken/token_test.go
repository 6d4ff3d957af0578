package iamtoken_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

const (
	testEndpoint = "db1.abc.us-east-1.rds.amazonaws.com:5432"
	testRegion   = "us-east-1"
)

var testTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func testCreds(session string) aws.Credentials {
	return aws.Credentials{AccessKeyID: "AKIATESTEXAMPLE", SecretAccessKey: "secret-example-key", SessionToken: session}
}

func mustSign(t testing.TB, endpoint, region, user string, creds aws.Credentials, at time.Time, life time.Duration) string {
	t.Helper()
	tok, err := iamtoken.SignAt(context.Background(), endpoint, region, user, creds, at, life)
	if err != nil {
		t.Fatalf("SignAt: %v", err)
	}
	return tok
}

// TestSignAtMatchesBuild proves SignAt produces tokens of the same shape as
// feature/rds/auth: same parameters in the same order, same parsed content.
func TestSignAtMatchesBuild(t *testing.T) {
	creds := testCreds("FwoGZXIvYXdzEXAMPLE+/=session")
	provider := credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	before := time.Now().UTC().Truncate(time.Second)
	built, err := iamtoken.Build(context.Background(), testEndpoint, testRegion, "iam user", provider)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	signed := mustSign(t, testEndpoint, testRegion, "iam user", creds, testTime, 15*time.Minute)

	if got, want := paramNames(t, signed), paramNames(t, built); !cmp.Equal(got, want) {
		t.Errorf("parameter order differs (-SignAt +Build):\n%s", cmp.Diff(got, want))
	}
	b, err := iamtoken.Parse(built)
	if err != nil {
		t.Fatalf("Parse(Build): %v", err)
	}
	s, err := iamtoken.Parse(signed)
	if err != nil {
		t.Fatalf("Parse(SignAt): %v", err)
	}
	if b.SignedAt.Before(before) || b.SignedAt.After(time.Now()) {
		t.Errorf("Build SignedAt = %v, want between %v and now", b.SignedAt, before)
	}
	if diff := cmp.Diff(s, b, cmpopts.IgnoreFields(iamtoken.Token{}, "SignedAt"), cmpopts.IgnoreUnexported(iamtoken.Token{})); diff != "" {
		t.Errorf("parsed tokens differ (-SignAt +Build):\n%s", diff)
	}
	if !s.SignedAt.Equal(testTime) {
		t.Errorf("SignAt SignedAt = %v, want %v", s.SignedAt, testTime)
	}
}

func paramNames(t *testing.T, tok string) []string {
	t.Helper()
	_, q, ok := strings.Cut(tok, "?")
	if !ok {
		t.Fatalf("token has no query")
	}
	var names []string
	for _, kv := range strings.Split(q, "&") {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	return names
}

func TestParse(t *testing.T) {
	tok := mustSign(t, testEndpoint, testRegion, "app_user", testCreds("sess"), testTime, 10*time.Minute)
	got, err := iamtoken.Parse(tok)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &iamtoken.Token{
		Host: "db1.abc.us-east-1.rds.amazonaws.com", Port: 5432, DBUser: "app_user", Region: testRegion,
		AccessKeyID: "AKIATESTEXAMPLE", SignedAt: testTime, Lifetime: 10 * time.Minute, HasSessionToken: true,
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(iamtoken.Token{})); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if want := testTime.Add(10 * time.Minute); !got.Expires().Equal(want) {
		t.Errorf("Expires = %v, want %v", got.Expires(), want)
	}
	cli, err := iamtoken.Parse(strings.Replace(tok, "?", "/?", 1))
	if err != nil {
		t.Fatalf("Parse of the AWS CLI shape host:port/?...: %v", err)
	}
	if diff := cmp.Diff(got, cli, cmp.AllowUnexported(iamtoken.Token{})); diff != "" {
		t.Errorf("CLI shape parses differently (-v2 +cli):\n%s", diff)
	}
	if got.Endpoint() != testEndpoint {
		t.Errorf("Endpoint = %q, want %q", got.Endpoint(), testEndpoint)
	}
}

// TestParseMalformed feeds broken tokens that each carry a secret marker and
// checks the error is a malformed *Error that does not echo the secret.
func TestParseMalformed(t *testing.T) {
	const secret = "SECRETMARKER"
	good := mustSign(t, testEndpoint, testRegion, "u", testCreds(secret), testTime, 15*time.Minute)
	edit := func(key, value string) string {
		host, q, _ := strings.Cut(good, "?")
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		if value == "" {
			v.Del(key)
		} else {
			v.Set(key, value)
		}
		return host + "?" + v.Encode()
	}
	tests := []struct{ name, token string }{
		{"empty", ""},
		{"no query", "db:5432" + secret},
		{"path", strings.Replace(good, "?", "/x?", 1)},
		{"no port", strings.Replace(good, ":5432", "", 1)},
		{"bad port", strings.Replace(good, ":5432", ":99999", 1)},
		{"control character in host", strings.Replace(good, "db1.", "db1\n"+secret+".", 1)},
		{"bad escape", good + "&x=%zz" + secret},
		{"repeated", good + "&DBUser=" + secret},
		{"no action", edit("Action", "")},
		{"no user", edit("DBUser", "")},
		{"no signature", edit("X-Amz-Signature", "")},
		{"short signature", edit("X-Amz-Signature", "abc"+secret)},
		{"algorithm", edit("X-Amz-Algorithm", "AWS4-HMAC-SHA1"+secret)},
		{"credential parts", edit("X-Amz-Credential", "AKID/20240102/us-east-1/rds-db"+secret)},
		{"credential date", edit("X-Amz-Credential", "AKID/20240103/us-east-1/rds-db/aws4_request")},
		// The server keys its failure budgets by the access key id: no AWS
		// key id is longer than 128 word characters.
		{"access key id too long", edit("X-Amz-Credential", strings.Repeat("K", 129)+"/20240102/us-east-1/rds-db/aws4_request")},
		{"access key id not a word", edit("X-Amz-Credential", "AKID"+secret+"-\x00/20240102/us-east-1/rds-db/aws4_request")},
		{"date", edit("X-Amz-Date", "2024-01-02"+secret)},
		{"expires zero", edit("X-Amz-Expires", "0")},
		{"expires huge", edit("X-Amz-Expires", "604801")},
		{"expires text", edit("X-Amz-Expires", "15m"+secret)},
		{"too long", good + "&pad=" + strings.Repeat("a", iamtoken.MaxLen) + secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := iamtoken.Parse(tt.token)
			var e *iamtoken.Error
			if !errors.As(err, &e) || e.Reason != iamtoken.ReasonMalformed {
				t.Fatalf("Parse error = %v, want *Error with reason malformed", err)
			}
			if strings.Contains(err.Error(), secret) || strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("error %q leaks token content", err)
			}
		})
	}
}

func TestSignAtRejects(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		life     time.Duration
	}{
		{"no port", "db.example", 15 * time.Minute},
		{"zero lifetime", testEndpoint, 0},
		{"lifetime too long", testEndpoint, 8 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := iamtoken.SignAt(context.Background(), tt.endpoint, testRegion, "u", testCreds(""), testTime, tt.life)
			if err == nil {
				t.Fatal("SignAt succeeded, want error")
			}
		})
	}
}
