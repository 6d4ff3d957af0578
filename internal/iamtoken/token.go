package iamtoken

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
)

const (
	// Service is the SigV4 signing name of RDS IAM database authentication.
	Service = "rds-db"
	// Action is the only action RDS accepts in a token.
	Action = "connect"
	// DefaultLifetime is the lifetime feature/rds/auth gives every token.
	DefaultLifetime = 15 * time.Minute
	// MaxLen bounds the length of a token Parse accepts. Tokens signed with
	// long STS session tokens stay well below it.
	MaxLen = 8 << 10

	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	algorithm        = "AWS4-HMAC-SHA256"
	amzDateFormat    = "20060102T150405Z"
	scopeDateFormat  = "20060102"
	maxLifetime      = 7 * 24 * time.Hour
)

// Build signs a token for user at endpoint ("host:port") in region with
// feature/rds/auth.BuildAuthToken, exactly as AWS tools do.
func Build(ctx context.Context, endpoint, region, user string, creds aws.CredentialsProvider) (string, error) {
	tok, err := auth.BuildAuthToken(ctx, endpoint, region, user, creds)
	if err != nil {
		return "", fmt.Errorf("build rds auth token for %s: %w", endpoint, err)
	}
	return tok, nil
}

// SignAt signs a token like BuildAuthToken but at a chosen time and with a
// chosen lifetime (whole seconds, 1s to 7 days). Tests use it for expired and
// future tokens.
func SignAt(ctx context.Context, endpoint, region, user string, creds aws.Credentials, at time.Time, lifetime time.Duration) (string, error) {
	if _, _, err := splitEndpoint(endpoint); err != nil {
		return "", fmt.Errorf("sign rds auth token: %w", err)
	}
	if lifetime < time.Second || lifetime > maxLifetime {
		return "", fmt.Errorf("sign rds auth token: lifetime %s is outside 1s..%s", lifetime, maxLifetime)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+endpoint, nil)
	if err != nil {
		return "", fmt.Errorf("sign rds auth token for %s: %w", endpoint, err)
	}
	q := url.Values{}
	q.Set("Action", Action)
	q.Set("DBUser", user)
	q.Set("X-Amz-Expires", strconv.FormatInt(int64(lifetime/time.Second), 10))
	req.URL.RawQuery = q.Encode()
	signed, _, err := v4.NewSigner().PresignHTTP(ctx, creds, req, emptyPayloadHash, Service, region, at.UTC())
	if err != nil {
		return "", fmt.Errorf("sign rds auth token for %s: %w", endpoint, err)
	}
	return strings.TrimPrefix(signed, "https://"), nil
}

// Token is the parsed, unverified content of an RDS IAM token.
type Token struct {
	Host            string
	Port            int
	DBUser          string
	Region          string
	AccessKeyID     string
	SignedAt        time.Time
	Lifetime        time.Duration
	HasSessionToken bool

	action  string
	service string
}

// Expires is the instant after which RDS refuses the token.
func (t *Token) Expires() time.Time { return t.SignedAt.Add(t.Lifetime) }

// Endpoint is the token's "host:port".
func (t *Token) Endpoint() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// Parse decodes a token without verifying its signature. Its errors are
// *Error with Reason "malformed" and never contain the token text.
func Parse(s string) (*Token, error) {
	if len(s) > MaxLen {
		return nil, malformed("token is longer than %d bytes", MaxLen)
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	hostPort, rawQuery, ok := strings.Cut(s, "?")
	if !ok {
		return nil, malformed("token is not an RDS presigned URL (no \"?\" after host:port)")
	}
	hostPort = strings.TrimSuffix(hostPort, "/") // the AWS CLI and SDK v1 write "host:port/?"
	host, port, err := splitEndpoint(hostPort)
	if err != nil {
		return nil, malformed("token host:port is invalid")
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, malformed("token query string is not URL-encoded")
	}
	p, err := singleParams(q)
	if err != nil {
		return nil, err
	}
	t := &Token{Host: host, Port: port, DBUser: p["DBUser"], action: p["Action"],
		HasSessionToken: p["X-Amz-Security-Token"] != ""}
	if err := t.parseSigning(p); err != nil {
		return nil, err
	}
	return t, nil
}

var requiredParams = []string{
	"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
	"X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature",
}

// singleParams flattens q, requiring every parameter at most once and the
// required ones present and non-empty.
func singleParams(q url.Values) (map[string]string, error) {
	p := make(map[string]string, len(q))
	for k, v := range q {
		if len(v) != 1 {
			return nil, malformed("token repeats query parameter %s", limit(k))
		}
		p[k] = v[0]
	}
	for _, k := range requiredParams {
		if p[k] == "" {
			return nil, malformed("token lacks query parameter %s", k)
		}
	}
	return p, nil
}

func (t *Token) parseSigning(p map[string]string) error {
	if p["X-Amz-Algorithm"] != algorithm {
		return malformed("token algorithm is not %s", algorithm)
	}
	scope := strings.Split(p["X-Amz-Credential"], "/")
	if len(scope) != 5 || !ValidAccessKeyID(scope[0]) || scope[2] == "" || scope[4] != "aws4_request" {
		return malformed("token credential is not AKID/date/region/service/aws4_request")
	}
	t.AccessKeyID, t.Region, t.service = scope[0], scope[2], scope[3]
	at, err := time.Parse(amzDateFormat, p["X-Amz-Date"])
	if err != nil {
		return malformed("token X-Amz-Date is not YYYYMMDDTHHMMSSZ")
	}
	if at.Format(scopeDateFormat) != scope[1] {
		return malformed("token credential date does not match X-Amz-Date")
	}
	t.SignedAt = at
	secs, err := strconv.ParseInt(p["X-Amz-Expires"], 10, 64)
	if err != nil || secs < 1 || secs > int64(maxLifetime/time.Second) {
		return malformed("token X-Amz-Expires is not a number of seconds between 1 and %d", int64(maxLifetime/time.Second))
	}
	t.Lifetime = time.Duration(secs) * time.Second
	if !isLowerHex(p["X-Amz-Signature"], 64) {
		return malformed("token signature is not 64 hex digits")
	}
	return nil
}

// splitEndpoint splits "host:port" and validates the port.
func splitEndpoint(hostPort string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint %q is not host:port", limit(hostPort))
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 || !isHostName(host) {
		return "", 0, fmt.Errorf("endpoint %q has no valid host and port", limit(hostPort))
	}
	return host, port, nil
}

// isHostName accepts DNS names and IP literals (with an IPv6 zone), so that
// hosts echoed in Check messages are plain text.
func isHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._:%", c) >= 0) {
			return false
		}
	}
	return true
}

// maxAccessKeyID is the longest access key id AWS issues (IAM's
// AccessKeyId: 16 to 128 word characters).
const maxAccessKeyID = 128

// ValidAccessKeyID reports whether id could be an AWS access key id: 1 to
// 128 letters, digits or underscores. The server keys its failure budgets
// and identity cache by it, so a forged one must not be kilobytes long.
func ValidAccessKeyID(id string) bool {
	if id == "" || len(id) > maxAccessKeyID {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// limit shortens a value echoed in an error so that a hostile token cannot
// fill logs.
func limit(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
