package sandbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
)

// SigV4 verification of RDS IAM tokens, written from the AWS Signature
// Version 4 specification for presigned URLs:
//
//	CanonicalRequest = GET \n / \n CanonicalQuery \n host:<host:port> \n \n host \n hex(SHA256(""))
//	StringToSign     = AWS4-HMAC-SHA256 \n X-Amz-Date \n <date>/<region>/<service>/aws4_request \n hex(SHA256(CanonicalRequest))
//	SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")
//	Signature        = hex(HMAC(SigningKey, StringToSign))
//
// CanonicalQuery is every query parameter except X-Amz-Signature, names and
// values URI-encoded (RFC 3986 unreserved characters kept, uppercase hex,
// space as %20), sorted by name then value, joined with '&'.

const (
	sigAlgorithm      = "AWS4-HMAC-SHA256"
	sigEmptyBodyHash  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sigSignatureParam = "X-Amz-Signature"
)

var errSignatureMismatch = errors.New("signature does not match")

// presigned is a SigV4 presigned URL split into what the signature covers:
// the host (with port) and the decoded query without X-Amz-Signature.
type presigned struct {
	hostPort  string              // as written, without "https://" and a trailing "/"
	params    map[string][]string // every query parameter but the signature, repeats kept
	signature string
}

// parsePresigned splits a presigned URL written as host:port/?query or
// host:port?query, with or without "https://". It checks only that the
// query decodes and carries exactly one signature; errors never contain
// the token.
func parsePresigned(token string) (*presigned, error) {
	token = strings.TrimPrefix(token, "https://")
	hostPort, rawQuery, ok := strings.Cut(token, "?")
	if !ok {
		return nil, errors.New("no \"?\" after host:port")
	}
	params, signature, err := splitQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	// The canonical URI is "/" whether or not the token writes it.
	return &presigned{hostPort: strings.TrimSuffix(hostPort, "/"), params: params, signature: signature}, nil
}

// get returns the value of parameter k when it appears exactly once, else "".
func (p *presigned) get(k string) string {
	if v := p.params[k]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// verifySigV4 checks the presigned-URL signature of token with the secret of
// its access key id. It checks nothing else (action, user, expiry and host
// are checked by the caller). Errors never contain the token.
func verifySigV4(token string, secrets map[string]string) error {
	p, err := parsePresigned(token)
	if err != nil {
		return err
	}
	return p.verify(secrets)
}

// verify recomputes the signature from the parsed URL and the secret of its
// access key id, and compares it in constant time.
func (p *presigned) verify(secrets map[string]string) error {
	if p.get("X-Amz-Algorithm") != sigAlgorithm {
		return errors.New("algorithm is not " + sigAlgorithm)
	}
	if p.get("X-Amz-SignedHeaders") != "host" {
		return errors.New("signed headers are not exactly host")
	}
	scope := strings.Split(p.get("X-Amz-Credential"), "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return errors.New("credential scope is malformed")
	}
	secret, ok := secrets[scope[0]]
	if !ok {
		return fmt.Errorf("unknown access key id %s", limitText(scope[0]))
	}
	amzDate := p.get("X-Amz-Date")
	if len(amzDate) < 8 || amzDate[:8] != scope[1] {
		return errors.New("credential date does not match X-Amz-Date")
	}
	canonical := strings.Join([]string{
		"GET", "/", canonicalQuery(p.params), "host:" + canonicalHost(p.hostPort) + "\n", "host", sigEmptyBodyHash,
	}, "\n")
	stringToSign := strings.Join([]string{
		sigAlgorithm, amzDate, strings.Join(scope[1:], "/"), hexSHA256(canonical),
	}, "\n")
	key := []byte("AWS4" + secret)
	for _, part := range scope[1:] {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, stringToSign))
	if !hmac.Equal([]byte(want), []byte(p.signature)) {
		return errSignatureMismatch
	}
	return nil
}

// splitQuery decodes the raw query, keeping repeated names, and separates
// the signature, which must appear exactly once.
func splitQuery(raw string) (map[string][]string, string, error) {
	params := make(map[string][]string)
	var signature []string
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, "", errors.New("query is not URL-encoded")
		}
		if key == sigSignatureParam {
			signature = append(signature, val)
			continue
		}
		params[key] = append(params[key], val)
	}
	if len(signature) != 1 {
		return nil, "", errors.New("need exactly one X-Amz-Signature")
	}
	return params, signature[0], nil
}

func canonicalQuery(params map[string][]string) string {
	type kv struct{ k, v string }
	var pairs []kv
	for k, vs := range params {
		for _, v := range vs {
			pairs = append(pairs, kv{uriEncode(k), uriEncode(v)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

// canonicalHost is the host header the signer saw for https://hostPort: the
// default port 443 is dropped, any other port kept.
func canonicalHost(hostPort string) string {
	if host, port, err := net.SplitHostPort(hostPort); err == nil && port == "443" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return hostPort
}

// uriEncode percent-encodes everything but RFC 3986 unreserved characters.
func uriEncode(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
