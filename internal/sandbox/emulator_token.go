package sandbox

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The emulator's own reading of an RDS IAM token, written from the RDS user
// guide ("IAM database authentication": a token is a SigV4 presigned URL
// for service rds-db with Action=connect and DBUser, valid for 15 minutes)
// and the SigV4 query-string authentication reference (X-Amz-Algorithm,
// X-Amz-Credential = AKID/yyyymmdd/region/service/aws4_request, X-Amz-Date
// = yyyymmddThhmmssZ, X-Amz-Expires in seconds, X-Amz-SignedHeaders,
// X-Amz-Signature). It shares no code with the server's token pre-check,
// which the emulator exists to test, so the two can disagree.

const (
	rdsService    = "rds-db"
	rdsAction     = "connect"
	rdsMaxExpires = 900 // seconds: an RDS token lives 15 minutes, and RDS refuses a longer X-Amz-Expires
	amzDateLayout = "20060102T150405Z"
	maxEchoed     = 64 // bytes of a token field echoed in a refusal reason
)

// rdsTokenParams must each appear exactly once, non-empty. X-Amz-Signature
// is counted by parsePresigned.
var rdsTokenParams = []string{
	"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
}

// tokenRequest is the connection a token is presented for.
type tokenRequest struct {
	user      string            // user in the StartupMessage
	sni       string            // TLS server name; "" when the client sent none
	endpoints map[string]string // lower-case "host:port" the emulator serves -> its region
	secrets   map[string]string // access key id -> secret access key
	now       time.Time
}

// checkToken returns why RDS would refuse token for req, or nil. It makes
// every check but rds_iam membership: shape, Action, endpoint (and TLS
// server name), DBUser, credential scope, validity window with
// X-Amz-Expires at most 900 s, and the signature. Its errors never contain
// the token; echoed fields are cut to a few dozen bytes.
func checkToken(token string, req tokenRequest) error {
	p, err := parsePresigned(token)
	if err != nil {
		return fmt.Errorf("token is not an RDS presigned URL: %w", err)
	}
	for k, v := range p.params {
		if len(v) != 1 {
			return fmt.Errorf("token repeats query parameter %s", limitText(k))
		}
	}
	for _, k := range rdsTokenParams {
		if p.get(k) == "" {
			return fmt.Errorf("token lacks query parameter %s", k)
		}
	}
	if a := p.get("Action"); a != rdsAction {
		return fmt.Errorf("token action is %q, not %s", limitText(a), rdsAction)
	}
	region, err := req.checkEndpoint(p.hostPort)
	if err != nil {
		return err
	}
	if u := p.get("DBUser"); u != req.user {
		return fmt.Errorf("token is for DB user %q, not %q", limitText(u), limitText(req.user))
	}
	if err := checkScope(p, region); err != nil {
		return err
	}
	if err := checkValidity(p, req.now); err != nil {
		return err
	}
	if err := p.verify(req.secrets); err != nil {
		return fmt.Errorf("sigv4: %w", err)
	}
	return nil
}

// checkEndpoint requires the token's host:port to be an endpoint this
// emulator impersonates and, when the client sent SNI, its host to be the
// server name the client verified. It returns that endpoint's region: with
// SNI, the region of the instance the client reached, as RDS checks; without
// it the emulator cannot tell its endpoints apart and trusts the token's.
func (r tokenRequest) checkEndpoint(hostPort string) (string, error) {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", fmt.Errorf("token host:port %q is not host:port", limitText(hostPort))
	}
	region, ok := r.endpoints[strings.ToLower(hostPort)]
	if !ok {
		return "", fmt.Errorf("token endpoint %s is not one this emulator serves", limitText(hostPort))
	}
	if r.sni != "" && !strings.EqualFold(r.sni, host) {
		return "", fmt.Errorf("token host %s differs from the TLS server name %s", limitText(host), r.sni)
	}
	return region, nil
}

// checkScope requires the credential scope AKID/date/region/rds-db/aws4_request
// for the endpoint's region.
func checkScope(p *presigned, region string) error {
	scope := strings.Split(p.get("X-Amz-Credential"), "/")
	if len(scope) != 5 || scope[0] == "" || scope[4] != "aws4_request" {
		return errors.New("token credential is not AKID/date/region/service/aws4_request")
	}
	if scope[2] != region {
		return fmt.Errorf("token is for region %s, not %s", limitText(scope[2]), region)
	}
	if scope[3] != rdsService {
		return fmt.Errorf("token is for service %s, not %s", limitText(scope[3]), rdsService)
	}
	return nil
}

// checkValidity reads X-Amz-Date and X-Amz-Expires and requires now to lie
// in [date, date+expires], with expires between 1 and 900 seconds.
func checkValidity(p *presigned, now time.Time) error {
	signed, err := time.Parse(amzDateLayout, p.get("X-Amz-Date"))
	if err != nil {
		return errors.New("token X-Amz-Date is not yyyymmddThhmmssZ")
	}
	raw := p.get("X-Amz-Expires")
	secs, err := strconv.Atoi(raw)
	if err != nil || !isDigits(raw) || secs < 1 || secs > rdsMaxExpires {
		return fmt.Errorf("token X-Amz-Expires %q is not 1 to %d seconds: RDS tokens live 15 minutes", limitText(raw), rdsMaxExpires)
	}
	if signed.After(now) {
		return fmt.Errorf("token is dated %s in the future", signed.Sub(now).Round(time.Second))
	}
	if expires := signed.Add(time.Duration(secs) * time.Second); now.After(expires) {
		return fmt.Errorf("token expired %s ago", now.Sub(expires).Round(time.Second))
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// limitText cuts a value taken from a token before it goes into a refusal
// reason, so that a hostile token cannot fill the log.
func limitText(s string) string {
	if len(s) > maxEchoed {
		return s[:maxEchoed] + "..."
	}
	return s
}
