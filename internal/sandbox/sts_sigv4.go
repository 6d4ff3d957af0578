package sandbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// SigV4 verification of header-signed requests (the Authorization header
// form), written from the AWS Signature Version 4 documentation, for the
// STS emulator. It shares no code with the client's signer (the AWS SDK)
// or with the RDS token verifier in sigv4.go:
//
//	Authorization    = AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=h1;h2, Signature=HEX
//	CanonicalRequest = METHOD \n URI \n QUERY \n (name:value \n)* \n h1;h2 \n hex(SHA256(body))
//	StringToSign     = AWS4-HMAC-SHA256 \n X-Amz-Date \n DATE/REGION/SERVICE/aws4_request \n hex(SHA256(CanonicalRequest))
//	SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, DATE), REGION), SERVICE), "aws4_request")
//
// A canonical header is its lowercase name, ':', and its values trimmed,
// inner runs of spaces collapsed to one, joined with ','. Host is the
// request's Host header, content-length the body's length.

// stsAuth is a parsed Authorization header.
type stsAuth struct {
	key, date, region, service string
	signed                     []string
	signature                  string
}

func parseSTSAuth(h string) (*stsAuth, error) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return nil, fmt.Errorf("Authorization header requires the AWS4-HMAC-SHA256 algorithm")
	}
	a := &stsAuth{}
	var cred, signed string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			a.signature = v
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || signed == "" || a.signature == "" {
		return nil, fmt.Errorf("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters")
	}
	a.key, a.date, a.region, a.service = scope[0], scope[1], scope[2], scope[3]
	a.signed = strings.Split(signed, ";")
	return a, nil
}

// stsExpectedSignature computes the signature r should carry.
func stsExpectedSignature(r *http.Request, body []byte, a *stsAuth, secret string) (string, error) {
	canon, err := stsCanonicalRequest(r, body, a.signed)
	if err != nil {
		return "", err
	}
	scope := strings.Join([]string{a.date, a.region, a.service, "aws4_request"}, "/")
	toSign := "AWS4-HMAC-SHA256\n" + r.Header.Get("X-Amz-Date") + "\n" + scope + "\n" + stsHexSHA256([]byte(canon))
	k := stsHMAC([]byte("AWS4"+secret), a.date)
	k = stsHMAC(k, a.region)
	k = stsHMAC(k, a.service)
	k = stsHMAC(k, "aws4_request")
	return hex.EncodeToString(stsHMAC(k, toSign)), nil
}

func stsCanonicalRequest(r *http.Request, body []byte, signed []string) (string, error) {
	if !sort.StringsAreSorted(signed) {
		return "", fmt.Errorf("SignedHeaders must be sorted")
	}
	var b strings.Builder
	b.WriteString(r.Method + "\n" + stsCanonicalURI(r.URL.EscapedPath()) + "\n" + r.URL.RawQuery + "\n")
	for _, name := range signed {
		if name != strings.ToLower(name) {
			return "", fmt.Errorf("SignedHeaders must be lowercase")
		}
		var values []string
		switch name {
		case "host":
			values = []string{r.Host}
		case "content-length":
			values = []string{strconv.Itoa(len(body))}
		default:
			values = append([]string(nil), r.Header.Values(name)...)
		}
		if len(values) == 0 {
			return "", fmt.Errorf("signed header %s is missing from the request", name)
		}
		for i, v := range values {
			values[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(name + ":" + strings.Join(values, ",") + "\n")
	}
	b.WriteString("\n" + strings.Join(signed, ";") + "\n" + stsHexSHA256(body))
	return b.String(), nil
}

func stsCanonicalURI(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func stsHexSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func stsHMAC(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
