package pgwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Message type bytes used during startup.
const (
	MsgAuth              = 'R'
	MsgBackendKeyData    = 'K'
	MsgErrorResponse     = 'E'
	MsgReadyForQuery     = 'Z'
	MsgPasswordMessage   = 'p'
	MsgNegotiateProtocol = 'v'
	MsgParameterStatus   = 'S'
)

// Authentication request codes carried in an 'R' message.
const (
	AuthOK                = 0
	AuthCleartextPassword = 3
	AuthMD5Password       = 5
	AuthSASL              = 10
	AuthSASLContinue      = 11
	AuthSASLFinal         = 12
)

// Message is one typed protocol message. Raw holds the whole message as
// it appeared on the wire (type byte, length, body), ready to forward.
type Message struct {
	Type byte
	Raw  []byte
}

// Body is the message without its type and length.
func (m Message) Body() []byte { return m.Raw[5:] }

// AuthCode is the request code of an 'R' message, or -1.
func (m Message) AuthCode() int {
	if m.Type != MsgAuth || len(m.Raw) < 9 {
		return -1
	}
	return int(binary.BigEndian.Uint32(m.Raw[5:9]))
}

// ReadMessage reads exactly one typed message of at most max bytes. It
// appends to buf[:0] and returns a Message whose Raw aliases it.
func ReadMessage(r io.Reader, buf []byte, max int) (Message, error) {
	buf = append(buf[:0], make([]byte, 5)...)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Message{}, err
	}
	n := int(binary.BigEndian.Uint32(buf[1:5]))
	if n < 4 || n+1 > max {
		return Message{}, fmt.Errorf("message %q of %d bytes is outside 4..%d", buf[0], n, max-1)
	}
	total := n + 1
	if cap(buf) < total {
		grown := make([]byte, 5, total)
		copy(grown, buf)
		buf = grown
	}
	buf = buf[:total]
	if _, err := io.ReadFull(r, buf[5:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	return Message{Type: buf[0], Raw: buf}, nil
}

// AppendNegotiateProtocolVersion appends NegotiateProtocolVersion: the
// newest minor version the server supports for the requested major, and
// the protocol options (_pq_.*) it did not recognise.
func AppendNegotiateProtocolVersion(dst []byte, version uint32, unrecognized []string) []byte {
	start := len(dst)
	dst = append(dst, MsgNegotiateProtocol, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, version)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(unrecognized)))
	for _, name := range unrecognized {
		dst = append(dst, name...)
		dst = append(dst, 0)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// AppendAuthCleartext appends AuthenticationCleartextPassword.
func AppendAuthCleartext(dst []byte) []byte {
	dst = append(dst, MsgAuth, 0, 0, 0, 8)
	return binary.BigEndian.AppendUint32(dst, AuthCleartextPassword)
}

// AppendPassword appends a PasswordMessage carrying secret.
func AppendPassword(dst []byte, secret string) []byte {
	dst = append(dst, MsgPasswordMessage)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(secret)+1))
	dst = append(dst, secret...)
	return append(dst, 0)
}

// PasswordText returns the NUL-terminated string of a PasswordMessage.
func PasswordText(m Message) (string, error) {
	if m.Type != MsgPasswordMessage {
		return "", fmt.Errorf("expected a password message, got message type %q", m.Type)
	}
	body := m.Body()
	if len(body) == 0 || body[len(body)-1] != 0 {
		return "", errors.New("password message is not NUL-terminated")
	}
	return string(body[:len(body)-1]), nil
}

// AppendParameterStatus appends ParameterStatus name=value.
func AppendParameterStatus(dst []byte, name, value string) []byte {
	dst = append(dst, MsgParameterStatus)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(name)+1+len(value)+1))
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// ParameterStatus decodes a ParameterStatus message; ok is false for any
// other message or a malformed one.
func ParameterStatus(m Message) (name, value string, ok bool) {
	if m.Type != MsgParameterStatus {
		return "", "", false
	}
	name, rest, found := strings.Cut(string(m.Body()), "\x00")
	value, tail, found2 := strings.Cut(rest, "\x00")
	if !found || !found2 || tail != "" {
		return "", "", false
	}
	return name, value, true
}

// BackendKey decodes a BackendKeyData message.
func BackendKey(m Message) (CancelKey, error) {
	body := m.Body()
	if m.Type != MsgBackendKeyData || len(body) < 8 || len(body) > 4+maxSecretLen {
		return CancelKey{}, errors.New("malformed BackendKeyData")
	}
	return CancelKey{PID: binary.BigEndian.Uint32(body), Secret: string(body[4:])}, nil
}
