package sandbox

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TokenSpec describes a token for SignTestToken. Zero fields take RDS's
// values: region Region, service rds-db, Action=connect, X-Amz-Expires=900,
// the sandbox credentials, signed now.
type TokenSpec struct {
	Endpoint string // host:port
	User     string
	Region   string
	Service  string
	Action   string
	Expires  string // X-Amz-Expires exactly as written
	At       time.Time
	Creds    aws.Credentials
	Extra    url.Values // added to the query before signing; may repeat a name
	Omit     []string   // removed from the query before signing
}

// SignTestToken signs spec with the AWS SDK's SigV4 presigner directly,
// bypassing every check of internal/iamtoken, so that tests can build
// tokens with a valid signature that RDS must still refuse.
func SignTestToken(spec TokenSpec) (string, error) {
	if spec.Region == "" {
		spec.Region = Region
	}
	if spec.Service == "" {
		spec.Service = rdsService
	}
	if spec.Action == "" {
		spec.Action = rdsAction
	}
	if spec.Expires == "" {
		spec.Expires = "900"
	}
	if spec.At.IsZero() {
		spec.At = time.Now()
	}
	if spec.Creds.AccessKeyID == "" {
		spec.Creds = Credentials()
	}
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+spec.Endpoint, nil)
	if err != nil {
		return "", err
	}
	q := url.Values{"Action": {spec.Action}, "DBUser": {spec.User}, "X-Amz-Expires": {spec.Expires}}
	for k, vs := range spec.Extra {
		q[k] = append(q[k], vs...)
	}
	for _, k := range spec.Omit {
		q.Del(k)
	}
	req.URL.RawQuery = q.Encode()
	signed, _, err := v4.NewSigner().PresignHTTP(ctx, spec.Creds, req, sigEmptyBodyHash, spec.Service, spec.Region, spec.At.UTC())
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(signed, "https://"), nil
}

// TestCheckToken checks each of RDS's refusals on its own: every refused
// token below carries a valid signature unless the case is about the
// signature, so that no check hides behind another.
func TestCheckToken(t *testing.T) {
	const (
		ep      = "app.c1sandbox.us-east-1.rds.amazonaws.com:5432"
		host    = "app.c1sandbox.us-east-1.rds.amazonaws.com"
		otherEP = "other.c1sandbox.us-east-1.rds.amazonaws.com:5432"
		user    = "iam_user"
	)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const (
		euHost = "app.c1sandbox.eu-west-1.rds.amazonaws.com"
		euEP   = euHost + ":5432"
	)
	req := tokenRequest{
		user: user, sni: host, now: now,
		endpoints: map[string]string{ep: Region, otherEP: Region, euEP: "eu-west-1"},
		secrets:   map[string]string{AccessKeyID: SecretAccessKey},
	}
	sign := func(spec TokenSpec) string {
		t.Helper()
		if spec.Endpoint == "" {
			spec.Endpoint = ep
		}
		if spec.User == "" {
			spec.User = user
		}
		if spec.At.IsZero() {
			spec.At = now
		}
		tok, err := SignTestToken(spec)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign(TokenSpec{})
	noSNI := req
	noSNI.sni = ""
	wrongSecret := Credentials()
	wrongSecret.SecretAccessKey = "not the sandbox secret"
	unknownKey := Credentials()
	unknownKey.AccessKeyID = "AKIAUNKNOWNEXAMPLE00"
	eu := req
	eu.sni = euHost
	euNoSNI := noSNI
	withSession := Credentials()
	withSession.SessionToken = "FwoGZXIvYXdz+/=session token"

	tests := []struct {
		name   string
		token  string
		req    tokenRequest
		reason string // "" when accepted
	}{
		{"valid", good, req, ""},
		{"https prefix", "https://" + good, req, ""},
		{"CLI shape host:port/?", strings.Replace(good, "?", "/?", 1), req, ""},
		{"session token", sign(TokenSpec{Creds: withSession}), req, ""},
		{"host in upper case", sign(TokenSpec{Endpoint: strings.ToUpper(host) + ":5432"}), req, ""},
		{"no SNI", good, noSNI, ""},
		{"lifetime 1 s, just signed", sign(TokenSpec{Expires: "1"}), req, ""},
		{"last valid second", sign(TokenSpec{At: now.Add(-900 * time.Second)}), req, ""},

		{"seven-day lifetime signed a day ago", sign(TokenSpec{At: now.Add(-24 * time.Hour), Expires: "604800"}), req,
			`X-Amz-Expires "604800" is not 1 to 900 seconds`},
		{"seven-day lifetime just signed", sign(TokenSpec{Expires: "604800"}), req, `X-Amz-Expires "604800" is not 1 to 900`},
		{"lifetime 901 s", sign(TokenSpec{Expires: "901"}), req, `X-Amz-Expires "901" is not 1 to 900`},
		{"lifetime 0", sign(TokenSpec{Expires: "0"}), req, `X-Amz-Expires "0"`},
		{"lifetime with sign", sign(TokenSpec{Expires: "+900"}), req, `X-Amz-Expires "+900"`},
		{"lifetime not a number", sign(TokenSpec{Expires: "15m"}), req, `X-Amz-Expires "15m"`},
		{"expired by a second", sign(TokenSpec{At: now.Add(-901 * time.Second)}), req, "token expired 1s ago"},
		{"signed in the future", sign(TokenSpec{At: now.Add(time.Minute)}), req, "dated 1m0s in the future"},
		{"action not connect", sign(TokenSpec{Action: "Connect"}), req, `token action is "Connect", not connect`},
		{"service rds", sign(TokenSpec{Service: "rds"}), req, "token is for service rds, not rds-db"},
		{"other region", sign(TokenSpec{Region: "eu-west-1"}), req, "token is for region eu-west-1, not us-east-1"},
		{"eu-west-1 token for the eu-west-1 endpoint", sign(TokenSpec{Endpoint: euEP, Region: "eu-west-1"}), eu, ""},
		{"eu-west-1 token for the eu-west-1 endpoint, no SNI", sign(TokenSpec{Endpoint: euEP, Region: "eu-west-1"}), euNoSNI, ""},
		{"us-east-1 token for the eu-west-1 endpoint", sign(TokenSpec{Endpoint: euEP}), eu, "token is for region us-east-1, not eu-west-1"},
		{"us-east-1 token for the eu-west-1 endpoint, no SNI", sign(TokenSpec{Endpoint: euEP}), euNoSNI, "token is for region us-east-1, not eu-west-1"},
		{"eu-west-1 token for the eu-west-1 endpoint, us-east-1 SNI", sign(TokenSpec{Endpoint: euEP, Region: "eu-west-1"}), req,
			"token host " + euHost + " differs from the TLS server name " + host},
		{"other user", sign(TokenSpec{User: "iam_other"}), req, `token is for DB user "iam_other", not "iam_user"`},
		{"user differs in case", sign(TokenSpec{User: "IAM_USER"}), req, `token is for DB user "IAM_USER"`},
		{"endpoint not served", sign(TokenSpec{Endpoint: "nope.example:5432"}), req, "token endpoint nope.example:5432 is not one this emulator serves"},
		{"other port", sign(TokenSpec{Endpoint: host + ":5433"}), req, "is not one this emulator serves"},
		{"served endpoint, other SNI", sign(TokenSpec{Endpoint: otherEP}), req, "differs from the TLS server name " + host},
		{"user twice", sign(TokenSpec{Extra: url.Values{"DBUser": {"iam_other"}}}), req, "token repeats query parameter DBUser"},
		{"no user", sign(TokenSpec{Omit: []string{"DBUser"}}), req, "token lacks query parameter DBUser"},
		{"no action", sign(TokenSpec{Omit: []string{"Action"}}), req, "token lacks query parameter Action"},
		{"no lifetime", sign(TokenSpec{Omit: []string{"X-Amz-Expires"}}), req, "token lacks query parameter X-Amz-Expires"},
		{"other algorithm", strings.Replace(good, "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1), req, "algorithm is not AWS4-HMAC-SHA256"},
		{"date not parseable", strings.Replace(good, "X-Amz-Date=20260301T120000Z", "X-Amz-Date=20260301T1200Z", 1), req, "X-Amz-Date is not yyyymmddThhmmssZ"},
		{"lifetime raised after signing", strings.Replace(good, "X-Amz-Expires=900", "X-Amz-Expires=60", 1), req, "sigv4: signature does not match"},
		{"wrong secret", sign(TokenSpec{Creds: wrongSecret}), req, "sigv4: signature does not match"},
		{"unknown access key", sign(TokenSpec{Creds: unknownKey}), req, "sigv4: unknown access key id"},
		{"no signature", good[:strings.Index(good, "&X-Amz-Signature=")], req, "need exactly one X-Amz-Signature"},
		{"garbage", "not-a-token", req, "token is not an RDS presigned URL"},
		{"empty", "", req, "token is not an RDS presigned URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkToken(tt.token, tt.req)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("checkToken refused a valid token: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkToken accepted a token RDS refuses; want %q", tt.reason)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("checkToken = %q, want it to say %q", err, tt.reason)
			}
			if sig := strings.Index(tt.token, "X-Amz-Signature="); sig >= 0 && strings.Contains(err.Error(), tt.token[sig:]) {
				t.Fatalf("reason contains the signature: %v", err)
			}
		})
	}
}

// TestCheckTokenEchoBounded checks that a huge field of a hostile token is
// cut before it reaches a refusal reason.
func TestCheckTokenEchoBounded(t *testing.T) {
	huge := strings.Repeat("u", 4000)
	tok, err := SignTestToken(TokenSpec{Endpoint: "app.example:5432", User: huge})
	if err != nil {
		t.Fatal(err)
	}
	req := tokenRequest{user: "iam_user", now: time.Now(),
		endpoints: map[string]string{"app.example:5432": Region}, secrets: map[string]string{AccessKeyID: SecretAccessKey}}
	err = checkToken(tok, req)
	if err == nil {
		t.Fatal("checkToken accepted a token for another user")
	}
	if len(err.Error()) > 200 {
		t.Fatalf("checkToken gave a %d-byte reason %.80q..., want under 200 bytes", len(err.Error()), err)
	}
}

// TestEndpointRegions checks the region each endpoint's tokens must carry:
// the one its RDS host name names, else EmulatorConfig.Region, and that a
// Region contradicting a host name is refused rather than silently ignored.
func TestEndpointRegions(t *testing.T) {
	for host, want := range map[string]string{
		"orders.aaaaaaaaaa.eu-west-1.rds.amazonaws.com":      "eu-west-1",
		"Orders.AAAAAAAAAA.EU-WEST-1.RDS.AMAZONAWS.COM.":     "eu-west-1",
		"db.cluster-ro-abc.us-gov-west-1.rds.amazonaws.com":  "us-gov-west-1",
		"db.abc.cn-north-1.rds.amazonaws.com.cn":             "cn-north-1",
		"rds.amazonaws.com":                                  "",
		"eu-west-1.rds.amazonaws.com":                        "",
		"app.example":                                        "",
		"app.eu-west-1.rds.amazonaws.com.example":            "",
		"proxy-1.proxy-abc.ap-southeast-2.rds.amazonaws.com": "ap-southeast-2",
	} {
		if got := hostRegion(host); got != want {
			t.Errorf("hostRegion(%q) = %q, want %q", host, got, want)
		}
	}
	ca, err := NewCA("region test CA")
	if err != nil {
		t.Fatal(err)
	}
	eu := "orders.aaaaaaaaaa.eu-west-1.rds.amazonaws.com:5432"
	for _, tt := range []struct {
		name, region, err string
	}{
		{"default", "", ""},
		{"agreeing", "eu-west-1", ""},
		{"contradicting", "us-east-1", `endpoint "` + eu + `" is in region eu-west-1, not Region us-east-1`},
	} {
		cfg := EmulatorConfig{Postgres: &Postgres{}, CA: ca, Endpoints: []string{eu, "app.example:5432"}, Region: tt.region}
		err := cfg.setDefaults()
		if (err == nil) != (tt.err == "") || err != nil && err.Error() != tt.err {
			t.Errorf("%s: setDefaults() = %v, want %q", tt.name, err, tt.err)
		}
	}
}
