// Package callerid is the wire format of rdsproxy's caller identity: a
// signed sts:GetCallerIdentity request that the client makes with the
// same AWS credentials as its IAM token and the server sends to STS, so
// that AWS itself says who the caller is.
//
// Data flow: the client signs a Request (Sign) for the server's STS region
// with a signed X-Rdsproxy-Server-Id header naming the server, encodes it
// (Encode) into the startup parameter rdsproxy.identity or the HTTP header
// X-Rdsproxy-Identity, and the server decodes it (Decode), checks what it
// can without AWS (ParseAuthorization, the date, the server id, the access
// key) and rebuilds the request for its own STS endpoint. Only the headers
// the signature covers travel; the body and content type are fixed, so
// they are not sent at all.
//
// docs/architecture.md §2 and §5 show where the identity travels and is
// checked.
package callerid

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rdsproxy/rdsproxy/contract"
)

const (
	// Param is the startup parameter that carries an encoded Request.
	// Servers that predate it strip it with every other rdsproxy.* parameter.
	Param = "rdsproxy.identity"
	// HTTPHeader carries an encoded Request on GET /v1/targets.
	HTTPHeader = "X-Rdsproxy-Identity"
	// ServerIDHeader is the signed header that binds a Request to one server.
	ServerIDHeader = "X-Rdsproxy-Server-Id"
	// Body and ContentType are the fixed request body and its type.
	Body        = "Action=GetCallerIdentity&Version=2011-06-15"
	ContentType = "application/x-www-form-urlencoded; charset=utf-8"
	// MaxEncoded bounds an encoded Request: a session token of 4 KiB
	// encodes to about 6,000 bytes, leaving room in a 10,000-byte startup.
	MaxEncoded = 7000
	// DateFormat is the layout of X-Amz-Date.
	DateFormat = "20060102T150405Z"
)

// ServerInfo is what a server tells clients about its identity check, in
// GET /v1/targets: the id to sign into ServerIDHeader, the STS region to
// sign for, and whether connections without identity are refused.
type ServerInfo = contract.ServerInfo

// Request is a signed GetCallerIdentity request as it travels: the value
// of every header the signature covers except content-type and
// content-length (lowercase names, "host" included), and Authorization.
type Request struct {
	Headers       map[string]string `json:"h"`
	Authorization string            `json:"a"`
}

// STSHost is the regional STS endpoint's host name, which clients sign.
func STSHost(region string) string { return "sts." + region + ".amazonaws.com" }

// Encode gives the compact form: unpadded base64url of the JSON.
func (r Request) Encode() string {
	b, _ := json.Marshal(r) // a struct of strings always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// ErrTooLong reports an encoded Request over MaxEncoded bytes.
var ErrTooLong = fmt.Errorf("identity is longer than %d bytes", MaxEncoded)

// Decode reads the compact form. It checks the shape only: names are
// lowercase header names, values hold no control characters, and an
// Authorization is present. Errors never quote the input.
func Decode(s string) (Request, error) {
	if len(s) > MaxEncoded {
		return Request{}, ErrTooLong
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Request{}, errors.New("identity is not base64url")
	}
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		return Request{}, errors.New("identity is not the expected JSON")
	}
	if r.Authorization == "" || len(r.Headers) == 0 {
		return Request{}, errors.New("identity has no signature or no headers")
	}
	if !headerSafe(r.Authorization) {
		return Request{}, errors.New("identity's Authorization holds invalid characters")
	}
	for k, v := range r.Headers {
		if k == "" || k != strings.ToLower(k) || !tokenSafe(k) || !headerSafe(v) {
			return Request{}, errors.New("identity holds an invalid header")
		}
	}
	return r, nil
}

// headerSafe: printable ASCII and spaces only, so a value can never split
// an HTTP header.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// tokenSafe: the characters of an HTTP header name.
func tokenSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
