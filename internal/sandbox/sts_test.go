package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const stsBody = "Action=GetCallerIdentity&Version=2011-06-15"

// signedSTSRequest signs a GetCallerIdentity request with the AWS SDK's
// signer, so the emulator's own verifier is checked against AWS's code.
func signedSTSRequest(t *testing.T, url string, creds aws.Credentials, region string, at time.Time, tamper func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(stsBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "sts." + region + ".amazonaws.com"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("X-Rdsproxy-Server-Id", "server-a")
	h := sha256.Sum256([]byte(stsBody))
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(h[:]), "sts", region, at); err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		tamper(req)
	}
	return req
}

func TestSTSEmulatorVerifiesSigV4(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := StartSTS(t.Context(), STSConfig{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wrongSecret := PrincipalAdmin.Credentials()
	wrongSecret.SecretAccessKey = "not-it"
	noToken := PrincipalSSO.Credentials()
	noToken.SessionToken = ""
	tests := []struct {
		name     string
		creds    aws.Credentials
		region   string
		at       time.Time
		tamper   func(*http.Request)
		status   int
		contains string
	}{
		{"IAM user", PrincipalUser.Credentials(), Region, now, nil, 200, "<Arn>" + PrincipalUser.ARN + "</Arn>"},
		{"admin role", PrincipalAdmin.Credentials(), Region, now, nil, 200, "<Arn>" + PrincipalAdmin.ARN + "</Arn>"},
		{"reader role", PrincipalReader.Credentials(), Region, now, nil, 200, "assumed-role/rdsproxy-reader/report-job"},
		{"SSO, long session token", PrincipalSSO.Credentials(), Region, now, nil, 200, "alice@example.com</Arn>"},
		{"account", PrincipalUser.Credentials(), Region, now.Add(-14 * time.Minute), nil, 200, "<Account>" + STSAccount + "</Account>"},
		{"wrong secret", wrongSecret, Region, now, nil, 403, "<Code>SignatureDoesNotMatch</Code>"},
		{"unknown key", aws.Credentials{AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: "x"}, Region, now, nil, 403, "<Code>InvalidClientTokenId</Code>"},
		{"temporary key without its session token", noToken, Region, now, nil, 403, "<Code>InvalidClientTokenId</Code>"},
		{"expired", PrincipalUser.Credentials(), Region, now.Add(-16 * time.Minute), nil, 403, "Signature expired"},
		{"another region", PrincipalUser.Credentials(), "eu-west-1", now, nil, 403, "Credential should be scoped"},
		{"server id changed after signing", PrincipalUser.Credentials(), Region, now,
			func(r *http.Request) { r.Header.Set("X-Rdsproxy-Server-Id", "server-b") }, 403, "SignatureDoesNotMatch"},
		{"host changed after signing", PrincipalUser.Credentials(), Region, now,
			func(r *http.Request) { r.Host = "sts.amazonaws.com" }, 403, "SignatureDoesNotMatch"},
		{"no signature", PrincipalUser.Credentials(), Region, now,
			func(r *http.Request) { r.Header.Del("Authorization") }, 403, "MissingAuthenticationToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(signedSTSRequest(t, s.URL(), tt.creds, tt.region, tt.at, tt.tamper))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.contains) {
				t.Errorf("status %d, body:\n%s\nwant %d containing %q", resp.StatusCode, body, tt.status, tt.contains)
			}
		})
	}
	if s.Calls() != int64(len(tests)) {
		t.Errorf("Calls() = %d, want %d", s.Calls(), len(tests))
	}
}

// The emulator verifies SigV4 with its own code: its files import the
// standard library only (sts_principals.go also the SDK's aws package,
// for the Credentials type), never the SDK's signer that the client and
// callerid sign with, nor any rdsproxy package. The package as a whole
// links the SDK signer through the RDS and EC2 clients that seed moto.
func TestSTSEmulatorSharesNoSigningCode(t *testing.T) {
	files, err := filepath.Glob("sts*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sts*.go files: %v", err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			stdlib := !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
			if !stdlib && !(name == "sts_principals.go" && path == "github.com/aws/aws-sdk-go-v2/aws") {
				t.Errorf("%s imports %s; the STS emulator must verify signatures with its own code", name, path)
			}
		}
	}
}
