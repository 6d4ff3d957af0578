package pgwire

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsproxy/rdsproxy/contract"
)

// SQLSTATE codes rdsproxy answers with.
const (
	CodeProtocolViolation   = "08P01"
	CodeCannotConnect       = "08001"
	CodeConnectionFailure   = "08006"
	CodeInvalidAuthSpec     = "28000"
	CodeInvalidPassword     = "28P01"
	CodeTooManyConnections  = "53300"
	CodeAdminShutdown       = "57P01"
	CodeFeatureNotSupported = "0A000"
)

// Error is a FATAL ErrorResponse rdsproxy sends to a client. It is also a
// Go error so that handlers can return it.
type Error struct {
	Code    string
	Message string
	Detail  string
	Hint    string
	// Reason is a short fixed label (contract.Reason*), never holding
	// user input: it travels in the Routine field for programs to branch
	// on, and labels logs and metrics.
	Reason string
}

// Errorf builds an Error with a formatted message.
func Errorf(code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// NoUser refuses a startup that names no database user (PostgreSQL
// refuses it with 28000 too; libpq and pgx always send one).
func NoUser() *Error {
	return Errorf(CodeInvalidAuthSpec, contract.ReasonUserNotAllowed, "rdsproxy: the startup names no database user").
		WithHint("Pass one: psql -U NAME, PGUSER=NAME, or user=NAME in the connection string.")
}

// WithHint returns e with a hint added.
func (e *Error) WithHint(hint string) *Error {
	e.Hint = hint
	return e
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// AppendTo appends the ErrorResponse message.
func (e *Error) AppendTo(dst []byte) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
	if e.Reason != "" {
		msg.Routine = contract.Routine(e.Reason)
	}
	out, err := msg.Encode(dst)
	if err != nil { // only on messages over 1 GiB
		return dst
	}
	return out
}

// Send writes the ErrorResponse to c, giving up after five seconds so a
// client that does not read cannot hold the caller.
func (e *Error) Send(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	e.WriteTo(c)
}

// WriteTo writes the ErrorResponse to w.
func (e *Error) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(e.AppendTo(nil))
	return int64(n), err
}

// Refusal returns the SQLSTATE and rdsproxy's reason (from the Routine
// field) of an ErrorResponse; reason is empty for a database's own
// ErrorResponse, both are for any other message. code is empty too when
// the C field is not five digits or capital letters: the peer's bytes go
// into log lines and metric labels only as a SQLSTATE.
func Refusal(m Message) (code, reason string) {
	e, ok := decodeError(m)
	if !ok {
		return "", ""
	}
	reason, _ = contract.ReasonOf(e.Routine)
	return sqlstate([]byte(e.Code)), reason
}

// ErrorText returns an ErrorResponse's message (its M field); "" for any
// other message.
func ErrorText(m Message) string {
	e, _ := decodeError(m)
	return e.Message
}

// decodeError decodes m when it is an ErrorResponse.
func decodeError(m Message) (e pgproto3.ErrorResponse, ok bool) {
	if m.Type != MsgErrorResponse || e.Decode(m.Body()) != nil {
		return pgproto3.ErrorResponse{}, false
	}
	return e, true
}

// EndingCode returns the SQLSTATE (the C field) of an ErrorResponse's or
// NoticeResponse's body, which may be only its start (relay.Result's
// LastWord), when its severity (the V field) is one with which PostgreSQL
// ends a session: FATAL or PANIC, or the WARNING a backend sends when the
// postmaster ends it (an immediate shutdown, another backend's crash). ""
// for any other severity (an ERROR is answered, not a farewell), when the
// fields it holds whole do not give both, or when the code is not five
// digits or capital letters.
func EndingCode(body []byte) string {
	severity, code := severityAndCode(body)
	switch string(severity) {
	case "FATAL", "PANIC", "WARNING":
		return sqlstate(code)
	}
	return ""
}

// AnswersCancel reports whether an ErrorResponse's body, which may be only
// its start (up to relay.LastWordLen bytes), is an ERROR with SQLSTATE
// 57014 (query_canceled): how PostgreSQL ends a statement that a
// CancelRequest (or statement_timeout) stopped.
func AnswersCancel(body []byte) bool {
	severity, code := severityAndCode(body)
	return string(severity) == "ERROR" && string(code) == "57014"
}

// severityAndCode returns the V (severity, never translated) and C
// (SQLSTATE) fields of an ErrorResponse's or NoticeResponse's body, nil for
// each that the fields it holds whole do not give.
func severityAndCode(body []byte) (severity, code []byte) {
	for len(body) > 0 && body[0] != 0 {
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break // cut inside this field
		}
		switch body[0] {
		case 'V':
			severity = body[1 : 1+end]
		case 'C':
			code = body[1 : 1+end]
		}
		body = body[2+end:]
	}
	return severity, code
}

// IsSQLState reports whether code is a SQLSTATE: five digits or capital
// letters.
func IsSQLState(code string) bool { return sqlstate([]byte(code)) != "" }

func sqlstate(b []byte) string {
	if len(b) != 5 {
		return ""
	}
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'A' || c > 'Z') {
			return ""
		}
	}
	return string(b)
}
