package callerid

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// Authorization is a parsed SigV4 Authorization header:
//
//	AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=hex
type Authorization struct {
	AccessKeyID   string
	Date          string // yyyymmdd of the credential scope
	Region        string
	Service       string
	SignedHeaders []string
	Signature     string
}

// ParseAuthorization reads a SigV4 Authorization header. Errors never
// quote the signature.
func ParseAuthorization(s string) (Authorization, error) {
	rest, ok := strings.CutPrefix(s, "AWS4-HMAC-SHA256 ")
	if !ok {
		return Authorization{}, errors.New("the signature is not AWS4-HMAC-SHA256")
	}
	var a Authorization
	var cred, signed string
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			a.Signature = v
		default:
			return Authorization{}, fmt.Errorf("the signature has an unknown field %.20q", k)
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || !iamtoken.ValidAccessKeyID(scope[0]) {
		return Authorization{}, errors.New("the signature's credential scope is not KEY/DATE/REGION/SERVICE/aws4_request")
	}
	a.AccessKeyID, a.Date, a.Region, a.Service = scope[0], scope[1], scope[2], scope[3]
	if signed == "" || len(a.Signature) != 64 {
		return Authorization{}, errors.New("the signature lacks SignedHeaders or a 64-digit Signature")
	}
	a.SignedHeaders = strings.Split(signed, ";")
	return a, nil
}

// Signs reports whether the signature covers header (lowercase).
func (a Authorization) Signs(header string) bool { return slices.Contains(a.SignedHeaders, header) }

// Date returns a Request's X-Amz-Date.
func (r Request) Date() (time.Time, error) {
	v, ok := r.Headers["x-amz-date"]
	if !ok {
		return time.Time{}, errors.New("the identity has no X-Amz-Date")
	}
	t, err := time.Parse(DateFormat, v)
	if err != nil {
		return time.Time{}, errors.New("the identity's X-Amz-Date is not yyyymmddThhmmssZ")
	}
	return t, nil
}
