package ssmendpoint

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// SigV4 verification of API requests (Authorization header form), written
// from the AWS Signature Version 4 specification, independently of the SDK
// that signs the client's requests.

// DefaultAccessKeyID and DefaultSecretAccessKey are the sandbox credentials
// the endpoint accepts when Config.Credentials is empty (the same pair the
// RDS IAM emulator uses).
const (
	DefaultAccessKeyID     = "AKIASANDBOXEXAMPLE01"
	DefaultSecretAccessKey = "sandbox/rdsproxy/iam-emulator/not-secret"
	sigv4Skew              = 5 * time.Minute
)

// verifySigV4 checks r's signature over body for service "ssm".
func verifySigV4(r *http.Request, body []byte, secrets map[string]string, now time.Time) *apiError {
	deny := func(code, format string, args ...any) *apiError {
		return &apiError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
	}
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return &apiError{http.StatusBadRequest, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return deny("IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature.")
	}
	keyID, day, region, service := scope[0], scope[1], scope[2], scope[3]
	secret, known := secrets[keyID]
	if !known {
		return deny("UnrecognizedClientException", "The security token included in the request is invalid.")
	}
	if service != "ssm" {
		return deny("InvalidSignatureException", "Credential should be scoped to correct service: 'ssm'.")
	}
	stamp := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", stamp)
	if err != nil || !strings.HasPrefix(stamp, day) {
		return deny("IncompleteSignatureException", "X-Amz-Date %q is missing or does not match the credential scope.", stamp)
	}
	if d := now.Sub(t); d > sigv4Skew || d < -sigv4Skew {
		return deny("InvalidSignatureException", "Signature expired: %s is now earlier than %s.", stamp, now.Add(-sigv4Skew).UTC().Format("20060102T150405Z"))
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.Contains(signed, "host") {
		return deny("InvalidSignatureException", "'Host' must be a signed header.")
	}
	payloadHash := sha256.Sum256(body)
	canonical := strings.Join([]string{
		r.Method,
		canonicalPath(r.URL),
		canonicalQueryString(r.URL.Query()),
		canonicalHeaders(r, signed),
		fields["SignedHeaders"],
		hex.EncodeToString(payloadHash[:]),
	}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	toSign := strings.Join([]string{"AWS4-HMAC-SHA256", stamp, strings.Join(scope[1:], "/"), hex.EncodeToString(crHash[:])}, "\n")
	key := mac([]byte("AWS4"+secret), day)
	for _, part := range []string{region, service, "aws4_request"} {
		key = mac(key, part)
	}
	want := hex.EncodeToString(mac(key, toSign))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return deny("InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}

func mac(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func canonicalPath(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return p
}

func canonicalQueryString(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, sigEscape(k)+"="+sigEscape(v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "&")
}

func sigEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func canonicalHeaders(r *http.Request, signed []string) string {
	var b strings.Builder
	for _, name := range signed {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			v = fmt.Sprint(r.ContentLength)
		default:
			v = strings.Join(r.Header.Values(name), ",")
		}
		b.WriteString(name + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	return b.String()
}
