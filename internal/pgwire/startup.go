package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/rdsproxy/rdsproxy/contract"
)

// Request codes that take the place of a protocol version in the first packet.
const (
	codeCancel   = 80877102
	codeSSL      = 80877103
	codeGSSENC   = 80877104
	protocolV3   = 3 << 16
	minStartLen  = 8
	maxSecretLen = 256 // protocol 3.2 allows cancel secrets up to 256 bytes
)

// Protocol versions rdsproxy knows: 3.0, and 3.2 (PostgreSQL 18) as the
// newest. A newer minor version asks for startup messages rdsproxy cannot
// vouch for.
const (
	Protocol30     uint32 = protocolV3
	ProtocolLatest uint32 = protocolV3 | 2
)

// protocolOptionPrefix marks protocol options (_pq_.*) in a StartupMessage.
const protocolOptionPrefix = "_pq_."

// IsProtocolOption reports whether a startup parameter is a protocol
// option rather than a setting.
func IsProtocolOption(key string) bool { return strings.HasPrefix(key, protocolOptionPrefix) }

// DefaultMaxStartupSize is PostgreSQL's own limit for a startup packet.
const DefaultMaxStartupSize = 10000

// Kind says what a startup-phase packet asks for.
type Kind int

// The packets a client can open a connection with.
const (
	KindStartup Kind = iota + 1
	KindSSLRequest
	KindGSSENCRequest
	KindCancel
)

// Errors a caller branches on.
var (
	// ErrDirectTLS: the client opened with a TLS ClientHello (PostgreSQL
	// 17's sslnegotiation=direct) instead of a PostgreSQL packet.
	ErrDirectTLS = errors.New("client started TLS directly (sslnegotiation=direct); connect with sslnegotiation=postgres or sslmode=disable")
	// ErrHTTP: the first bytes are an HTTP request line.
	ErrHTTP = errors.New("HTTP request")
)

// repeated is the refusal of a startup that sets key more than once.
func repeated(key string) *Error {
	return Errorf(CodeProtocolViolation, contract.ReasonRepeatedParameter,
		"rdsproxy: startup parameter %.64q is given more than once", key).
		WithHint("Send each startup parameter once; rdsproxy refuses startups whose meaning depends on which copy is read.")
}

// Param is one startup parameter. Order is kept as the client sent it.
type Param struct{ Key, Value string }

// Params are startup parameters in the order the client sent them.
type Params []Param

// Get returns the value of key and whether it is present.
func (p Params) Get(key string) (string, bool) {
	for _, kv := range p {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Set replaces key's value or appends it.
func (p Params) Set(key, value string) Params {
	for i := range p {
		if p[i].Key == key {
			p[i].Value = value
			return p
		}
	}
	return append(p, Param{key, value})
}

// Without returns p minus every parameter for which drop is true.
func (p Params) Without(drop func(key string) bool) Params {
	out := make(Params, 0, len(p))
	for _, kv := range p {
		if !drop(kv.Key) {
			out = append(out, kv)
		}
	}
	return out
}

// CancelKey identifies a backend for a CancelRequest (BackendKeyData).
type CancelKey struct {
	PID    uint32
	Secret string // 4 bytes in protocol 3.0, up to 256 in 3.2
}

// Startup is one decoded startup-phase packet.
type Startup struct {
	Kind     Kind
	Protocol uint32    // KindStartup: protocol version, major 3
	Params   Params    // KindStartup
	Cancel   CancelKey // KindCancel
}

// Peek reads the first four bytes of a connection and classifies them:
// ErrHTTP, ErrDirectTLS, or nil with the bytes for ReadStartupAfter.
func Peek(r io.Reader) ([4]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return hdr, fmt.Errorf("read startup packet: %w", err)
	}
	switch {
	case hdr[0] == 0x16 && hdr[1] == 0x03:
		return hdr, ErrDirectTLS
	case isHTTPMethod(hdr):
		return hdr, ErrHTTP
	}
	return hdr, nil
}

func isHTTPMethod(hdr [4]byte) bool {
	s := string(hdr[:])
	return s == "GET " || s == "HEAD" || s == "POST" || s == "PUT " || s == "OPTI"
}

// ReadStartup reads one startup-phase packet of at most max bytes.
func ReadStartup(r io.Reader, max int) (*Startup, error) {
	hdr, err := Peek(r)
	if err != nil {
		return nil, err
	}
	return ReadStartupAfter(r, hdr, max)
}

// ReadStartupAfter reads the rest of a startup packet whose four length
// bytes were already read by Peek.
func ReadStartupAfter(r io.Reader, hdr [4]byte, max int) (*Startup, error) {
	n := int64(binary.BigEndian.Uint32(hdr[:]))
	if n < minStartLen || n > int64(max) {
		e := Errorf(CodeProtocolViolation, contract.ReasonProtocol, "rdsproxy: invalid startup packet length %d (this proxy accepts 8 to %d bytes)", n, max)
		if n > int64(max) {
			e = e.WithHint("Send fewer or shorter startup parameters (options, application_name); rdsproxy server's limit is its --max-startup-size.")
		}
		return nil, e
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read startup packet: %w", err)
	}
	return ParseStartup(body)
}

// ParseStartup decodes a startup packet body (everything after the length).
func ParseStartup(body []byte) (*Startup, error) {
	if len(body) < 4 {
		return nil, errors.New("startup packet too short")
	}
	code := binary.BigEndian.Uint32(body)
	rest := body[4:]
	switch {
	case code == codeSSL || code == codeGSSENC:
		if len(rest) != 0 {
			return nil, fmt.Errorf("request code %d with %d extra bytes", code, len(rest))
		}
		if code == codeSSL {
			return &Startup{Kind: KindSSLRequest}, nil
		}
		return &Startup{Kind: KindGSSENCRequest}, nil
	case code == codeCancel:
		if len(rest) < 8 || len(rest) > 4+maxSecretLen {
			return nil, fmt.Errorf("cancel request of %d bytes", len(body)+4)
		}
		return &Startup{Kind: KindCancel, Cancel: CancelKey{
			PID:    binary.BigEndian.Uint32(rest),
			Secret: string(rest[4:]),
		}}, nil
	case code>>16 == 3:
		params, err := parseParams(rest)
		if err != nil {
			return nil, err
		}
		return &Startup{Kind: KindStartup, Protocol: code, Params: params}, nil
	}
	return nil, unsupportedProtocol(code)
}

// unsupportedProtocol refuses a startup of another major version than 3,
// with the SQLSTATE PostgreSQL answers it with.
func unsupportedProtocol(code uint32) *Error {
	return Errorf(CodeFeatureNotSupported, contract.ReasonProtocol,
		"rdsproxy: unsupported frontend protocol %d.%d: rdsproxy supports 3.0 to 3.%d", code>>16, code&0xffff, ProtocolLatest&0xffff).
		WithHint("Use a client that speaks protocol 3, as every PostgreSQL client since 7.4 does.")
}

// parseParams decodes NUL-terminated key/value pairs ending in one NUL.
// A key given twice is refused: PostgreSQL uses the last value, and a
// proxy that checked the first would be checking a different session from
// the one the database opens.
func parseParams(b []byte) (Params, error) {
	var params Params
	for {
		if len(b) == 0 {
			return nil, errors.New("startup parameters are not terminated")
		}
		if b[0] == 0 {
			if len(b) != 1 {
				return nil, errors.New("bytes after the startup parameters' terminator")
			}
			return params, nil
		}
		key, rest, ok := cutNUL(b)
		if !ok {
			return nil, errors.New("startup parameter name is not terminated")
		}
		value, rest, ok := cutNUL(rest)
		if !ok {
			return nil, fmt.Errorf("startup parameter %.64q has no terminated value", key)
		}
		if _, dup := params.Get(key); dup {
			return nil, repeated(key)
		}
		params = append(params, Param{key, value})
		b = rest
	}
}

func cutNUL(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// AppendStartup appends a StartupMessage with the given protocol and params.
func AppendStartup(dst []byte, protocol uint32, params Params) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, protocol)
	for _, kv := range params {
		dst = append(dst, kv.Key...)
		dst = append(dst, 0)
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// AppendSSLRequest appends an SSLRequest packet.
func AppendSSLRequest(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 8)
	return binary.BigEndian.AppendUint32(dst, codeSSL)
}

// AppendCancel appends a CancelRequest packet for key.
func AppendCancel(dst []byte, key CancelKey) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(key.Secret)))
	dst = binary.BigEndian.AppendUint32(dst, codeCancel)
	dst = binary.BigEndian.AppendUint32(dst, key.PID)
	return append(dst, key.Secret...)
}
