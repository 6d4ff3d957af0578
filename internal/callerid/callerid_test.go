package callerid

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

func TestSignEncodeDecode(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "ASIAEXAMPLE000000001", SecretAccessKey: "s", SessionToken: "session+token/=="}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r, err := Sign(context.Background(), creds, "ap-southeast-2", "prod-1", at)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ParseAuthorization(got.Authorization)
	if err != nil {
		t.Fatal(err)
	}
	date, err := got.Date()
	if err != nil || !date.Equal(at) {
		t.Errorf("date = %v, %v", date, err)
	}
	if auth.AccessKeyID != creds.AccessKeyID || auth.Region != "ap-southeast-2" || auth.Service != "sts" || auth.Date != "20260102" ||
		got.Headers["host"] != "sts.ap-southeast-2.amazonaws.com" || got.Headers["x-rdsproxy-server-id"] != "prod-1" ||
		got.Headers["x-amz-security-token"] != creds.SessionToken {
		t.Errorf("decoded %+v, auth %+v", got, auth)
	}
	for _, h := range auth.SignedHeaders {
		if _, ok := got.Headers[h]; !ok && h != "content-type" && h != "content-length" {
			t.Errorf("signed header %s does not travel", h)
		}
	}
	if _, ok := got.Headers["content-type"]; ok {
		t.Error("the fixed content type travels; it should not")
	}
}

func TestParseAuthorizationRefuses(t *testing.T) {
	sig := strings.Repeat("a", 64)
	for _, s := range []string{
		"",
		"AWS4-HMAC-SHA512 Credential=K/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=K/20260101/r/sts, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=" + strings.Repeat("K", 129) + "/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=K-1/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=K/20260101/r/sts/aws4_request, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=K/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=abc",
		"AWS4-HMAC-SHA256 Credential=K/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig + ", Extra=1",
	} {
		if a, err := ParseAuthorization(s); err == nil {
			t.Errorf("ParseAuthorization(%q) = %+v, want an error", s, a)
		} else if strings.Contains(err.Error(), sig) {
			t.Errorf("error quotes the signature: %v", err)
		}
	}
	// The longest access key id AWS issues passes.
	longest := strings.Repeat("K", 128)
	if a, err := ParseAuthorization("AWS4-HMAC-SHA256 Credential=" + longest + "/20260101/r/sts/aws4_request, SignedHeaders=host, Signature=" + sig); err != nil || a.AccessKeyID != longest {
		t.Errorf("a 128-character access key id: %+v, %v", a, err)
	}
}

// Decode either refuses or returns a request whose every header name and
// value (and Authorization) is safe to put in an HTTP request, and
// whose encoding decodes to the same request.
func FuzzDecode(f *testing.F) {
	r, _ := Sign(context.Background(), aws.Credentials{AccessKeyID: "AKIA", SecretAccessKey: "s"}, "us-east-1", "srv", time.Unix(0, 0))
	f.Add(r.Encode())
	f.Add("e30")
	f.Add(Request{Headers: map[string]string{"host": "x\r\ny"}, Authorization: "a"}.Encode())
	f.Fuzz(func(t *testing.T, s string) {
		req, err := Decode(s)
		if err != nil {
			return
		}
		if len(s) > MaxEncoded || req.Authorization == "" || !headerSafe(req.Authorization) {
			t.Fatalf("Decode accepted %q", s)
		}
		for k, v := range req.Headers {
			if k == "" || strings.ToLower(k) != k || !tokenSafe(k) || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("Decode accepted header %q: %q", k, v)
			}
		}
		again, err := Decode(req.Encode())
		if err != nil || again.Authorization != req.Authorization || len(again.Headers) != len(req.Headers) {
			t.Fatalf("re-encoding changed the request: %v", err)
		}
	})
}
