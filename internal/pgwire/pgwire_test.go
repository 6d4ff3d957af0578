package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestReadStartup(t *testing.T) {
	startup := AppendStartup(nil, protocolV3, Params{{"user", "alice"}, {"database", "app"}})
	tests := []struct {
		name    string
		in      []byte
		want    *Startup
		wantErr string
	}{
		{"startup", startup, &Startup{Kind: KindStartup, Protocol: protocolV3, Params: Params{{"user", "alice"}, {"database", "app"}}}, ""},
		{"ssl", AppendSSLRequest(nil), &Startup{Kind: KindSSLRequest}, ""},
		{"gssenc", []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}, &Startup{Kind: KindGSSENCRequest}, ""},
		{"cancel", AppendCancel(nil, CancelKey{PID: 42, Secret: "\x01\x02\x03\x04"}), &Startup{Kind: KindCancel, Cancel: CancelKey{PID: 42, Secret: "\x01\x02\x03\x04"}}, ""},
		{"cancel with a protocol 3.2 long secret", AppendCancel(nil, CancelKey{PID: 7, Secret: strings.Repeat("s", 32)}), &Startup{Kind: KindCancel, Cancel: CancelKey{PID: 7, Secret: strings.Repeat("s", 32)}}, ""},
		{"direct tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, nil, "sslnegotiation=direct"},
		{"http", []byte("GET /v1/targets HTTP/1.1\r\n"), nil, "HTTP"},
		{"too short length", []byte{0, 0, 0, 4, 1, 2, 3, 4}, nil, "(this proxy accepts 8 to 10000 bytes)"},
		{"oversized", binary.BigEndian.AppendUint32(nil, 1<<20), nil, "(this proxy accepts 8 to 10000 bytes)"},
		{"truncated", startup[:len(startup)-3], nil, "unexpected EOF"},
		{"protocol 2", []byte{0, 0, 0, 8, 0, 2, 0, 0}, nil, "unsupported frontend protocol 2.0: rdsproxy supports 3.0 to 3.2"},
		{"unterminated params", []byte{0, 0, 0, 12, 0, 3, 0, 0, 'u', 0, 'a', 'b'}, nil, "no terminated value"},
		{"bytes after terminator", []byte{0, 0, 0, 11, 0, 3, 0, 0, 0, 0, 0}, nil, "after the startup parameters"},
		{"ssl with trailing bytes", []byte{0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0}, nil, "extra bytes"},
		{"short cancel", []byte{0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1}, nil, "cancel request of 12 bytes"},
		{"empty", nil, nil, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadStartup(bytes.NewReader(tt.in), DefaultMaxStartupSize)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("startup (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadStartupReadsNoFurther(t *testing.T) {
	after := []byte("next bytes")
	in := bytes.NewReader(append(AppendSSLRequest(nil), after...))
	if _, err := ReadStartup(in, DefaultMaxStartupSize); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(in)
	if !bytes.Equal(rest, after) {
		t.Fatalf("bytes after the packet = %q, want %q", rest, after)
	}
}

func TestDirectTLSAndHTTPAreSentinels(t *testing.T) {
	if _, err := ReadStartup(bytes.NewReader([]byte{0x16, 0x03, 0x01, 0, 0}), 100); !errors.Is(err, ErrDirectTLS) {
		t.Errorf("direct TLS: err = %v", err)
	}
	if _, err := ReadStartup(strings.NewReader("GET / HTTP/1.1"), 100); !errors.Is(err, ErrHTTP) {
		t.Errorf("HTTP: err = %v", err)
	}
}

func TestReadMessage(t *testing.T) {
	auth := AppendAuthCleartext(nil)
	tests := []struct {
		name     string
		in       []byte
		max      int
		wantType byte
		wantErr  string
	}{
		{"auth", auth, 64, MsgAuth, ""},
		{"password", AppendPassword(nil, "tok"), 64, MsgPasswordMessage, ""},
		{"length below 4", []byte{'R', 0, 0, 0, 3}, 64, 0, "outside 4..63"},
		{"over max", AppendPassword(nil, strings.Repeat("x", 100)), 64, 0, "outside 4..63"},
		{"truncated body", auth[:7], 64, 0, "unexpected EOF"},
		{"truncated header", auth[:3], 64, 0, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMessage(bytes.NewReader(tt.in), nil, tt.max)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != tt.wantType || !bytes.Equal(m.Raw, tt.in) {
				t.Fatalf("got %q %x", m.Type, m.Raw)
			}
		})
	}
}

func TestPasswordAndKeys(t *testing.T) {
	m, err := ReadMessage(bytes.NewReader(AppendPassword(nil, "secret-token")), nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := PasswordText(m); err != nil || s != "secret-token" {
		t.Fatalf("PasswordText = %q, %v", s, err)
	}
	if _, err := PasswordText(Message{Type: 'p', Raw: []byte{'p', 0, 0, 0, 5, 'x'}}); err == nil {
		t.Error("unterminated password accepted")
	}
	if _, err := PasswordText(Message{Type: 'Q', Raw: []byte{'Q', 0, 0, 0, 5, 0}}); err == nil {
		t.Error("query accepted as password")
	}
	kd := Message{Type: 'K', Raw: []byte{'K', 0, 0, 0, 12, 0, 0, 0, 9, 1, 2, 3, 4}}
	if k, err := BackendKey(kd); err != nil || k.PID != 9 || k.Secret != "\x01\x02\x03\x04" {
		t.Fatalf("BackendKey = %+v, %v", k, err)
	}
	if _, err := BackendKey(Message{Type: 'K', Raw: []byte{'K', 0, 0, 0, 6, 0, 0}}); err == nil {
		t.Error("short BackendKeyData accepted")
	}
}

func TestTakeTarget(t *testing.T) {
	tests := []struct {
		name       string
		in         Params
		wantTarget string
		wantRest   Params
		wantErr    string
	}{
		{"parameter", Params{{"user", "u"}, {TargetParam, "prod"}, {"rdsproxy.other", "x"}},
			"prod", Params{{"user", "u"}}, ""},
		{"options -c", Params{{"user", "u"}, {"options", "-c rdsproxy.target=prod -c search_path=a"}},
			"prod", Params{{"user", "u"}, {"options", "-c search_path=a"}}, ""},
		{"options -c joined", Params{{"options", "-crdsproxy.target=prod"}}, "prod", Params{}, ""},
		{"options --", Params{{"options", "--rdsproxy.target=prod --work_mem=64MB"}},
			"prod", Params{{"options", "--work_mem=64MB"}}, ""},
		{"escaped space kept", Params{{"options", `-c application_name=a\ b -c rdsproxy.target=t`}},
			"t", Params{{"options", `-c application_name=a\ b`}}, ""},
		{"vertical tab and form feed separate options, as in PostgreSQL", Params{{"options", "-c\vrdsproxy.target=t\f-c geqo=off"}},
			"t", Params{{"options", "-c geqo=off"}}, ""},
		{"none", Params{{"user", "u"}, {"options", "-c geqo=off"}}, "", Params{{"user", "u"}, {"options", "-c geqo=off"}}, ""},
		{"parameter and options: refused, whichever would win", Params{{TargetParam, "a"}, {"options", "-c rdsproxy.target=b"}},
			"", nil, "rdsproxy.target\" is given more than once"},
		{"the same name twice is still refused", Params{{TargetParam, "a"}, {"options", "--rdsproxy.target=a"}},
			"", nil, "more than once"},
		{"twice inside options", Params{{"options", "-c rdsproxy.target=a -c rdsproxy.target=b"}},
			"", nil, "more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target, rest, err := TakeTarget(tt.in)
			if tt.wantErr != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != CodeProtocolViolation || !strings.Contains(pe.Message, tt.wantErr) {
					t.Fatalf("err = %v, want 08P01 containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || target != tt.wantTarget {
				t.Errorf("target = %q, %v; want %q", target, err, tt.wantTarget)
			}
			if diff := cmp.Diff(tt.wantRest, rest); diff != "" {
				t.Errorf("rest (-want +got):\n%s", diff)
			}
		})
	}
}

// A key given twice is refused with 08P01 naming it: PostgreSQL and RDS
// use the last copy, so a proxy that read the first would check one user
// and log in another.
func TestRepeatedStartupKeyRefused(t *testing.T) {
	for _, key := range []string{"user", "database", "application_name", TargetParam, "options"} {
		in := AppendStartup(nil, protocolV3, Params{{key, "first"}, {"x", "y"}, {key, "second"}})
		_, err := ReadStartup(bytes.NewReader(in), DefaultMaxStartupSize)
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != CodeProtocolViolation || pe.Reason != "repeated-parameter" ||
			!strings.Contains(pe.Message, `"`+key+`" is given more than once`) {
			t.Errorf("%s twice: err = %v, want 08P01 naming it", key, err)
		}
	}
	long := strings.Repeat("k", 5000)
	in := AppendStartup(nil, protocolV3, Params{{long, "1"}, {long, "2"}})
	_, err := ReadStartup(bytes.NewReader(in), DefaultMaxStartupSize)
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("a 5,000-byte repeated key: error of %d bytes, want a short refusal", len(err.Error()))
	}
}

func TestErrorResponseEncodes(t *testing.T) {
	e := Errorf(CodeInvalidAuthSpec, "unknown-target", "target %q is not served", "x").WithHint("run rdsproxy list")
	raw := e.AppendTo(nil)
	m, err := ReadMessage(bytes.NewReader(raw), nil, 1<<16)
	if err != nil || m.Type != MsgErrorResponse {
		t.Fatalf("ReadMessage = %v, %v", m.Type, err)
	}
	for _, want := range []string{"FATAL", "28000", `target "x" is not served`, "run rdsproxy list", "rdsproxy:unknown-target"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("ErrorResponse lacks %q", want)
		}
	}
	if code, reason := Refusal(m); code != "28000" || reason != "unknown-target" {
		t.Errorf("Refusal = %q, %q; want 28000, unknown-target", code, reason)
	}
	// A database's own ErrorResponse has no reason of rdsproxy's.
	db, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "PAM authentication failed", Routine: "auth_failed"}).Encode(nil)
	if code, reason := Refusal(Message{Type: MsgErrorResponse, Raw: db}); code != "28P01" || reason != "" {
		t.Errorf("database refusal: Refusal = %q, %q; want 28P01 and no reason", code, reason)
	}
	// A C field that is not a SQLSTATE is none: its bytes would go into
	// log lines and metric labels.
	for _, bad := range []string{"\xff\xfe\xfd\xfc\xfb", "28p01", "2800", "280000"} {
		raw, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: bad, Message: "no"}).Encode(nil)
		if code, _ := Refusal(Message{Type: MsgErrorResponse, Raw: raw}); code != "" {
			t.Errorf("C field %q: Refusal code = %q, want none", bad, code)
		}
	}
}

// EndingCode finds the SQLSTATE of a FATAL in an ErrorResponse body
// (encoded here by pgproto3, as a database's would be) or in any start of
// it that holds the V and C fields whole, and nothing in a start that cuts
// them, in an ERROR, or in a code that is not one.
func TestEndingCode(t *testing.T) {
	full, _ := (&pgproto3.ErrorResponse{Severity: "SCHWERWIEGEND", SeverityUnlocalized: "FATAL", Code: "57P01",
		Message: "Verbindung wird abgebrochen aufgrund von Anweisung des Administrators"}).Encode(nil)
	body := full[5:]
	whole := bytes.Index(body, []byte("C57P01\x00")) + len("C57P01\x00")
	for n := range len(body) + 1 {
		want := ""
		if n >= whole {
			want = "57P01"
		}
		if got := EndingCode(body[:n]); got != want {
			t.Errorf("first %d bytes: EndingCode = %q, want %q", n, got, want)
		}
	}
	for _, c := range []struct {
		name, body, want string
	}{
		{"a crash's WARNING", "SWARNING\x00VWARNING\x00C57P02\x00\x00", "57P02"},
		{"PANIC", "SPANIC\x00VPANIC\x00CXX000\x00\x00", "XX000"},
		{"an ERROR", "SERROR\x00VERROR\x00C57P01\x00\x00", ""},
		{"a NOTICE", "SNOTICE\x00VNOTICE\x00C00000\x00\x00", ""},
		{"no V field", "SFATAL\x00C57P01\x00\x00", ""},
		{"no C field", "SFATAL\x00VFATAL\x00Mbye\x00\x00", ""},
		{"a code of 4", "VFATAL\x00C57P0\x00\x00", ""},
		{"a code in lower case", "VFATAL\x00C57p01\x00\x00", ""},
		{"a code with a control character", "VFATAL\x00C57\nP1\x00\x00", ""},
		{"empty", "", ""},
	} {
		if got := EndingCode([]byte(c.body)); got != c.want {
			t.Errorf("%s: EndingCode = %q, want %q", c.name, got, c.want)
		}
	}
}

// AnswersCancel recognises PostgreSQL's answer to a cancel (ERROR 57014,
// whatever the language of the S field) in any start of it that holds
// the V and C fields whole, and nothing else.
func TestAnswersCancel(t *testing.T) {
	full, _ := (&pgproto3.ErrorResponse{Severity: "FEHLER", SeverityUnlocalized: "ERROR", Code: "57014",
		Message: "storniere Anfrage wegen Benutzeraufforderung"}).Encode(nil)
	body := full[5:]
	whole := bytes.Index(body, []byte("C57014\x00")) + len("C57014\x00")
	for n := range len(body) + 1 {
		if got := AnswersCancel(body[:n]); got != (n >= whole) {
			t.Errorf("first %d bytes: AnswersCancel = %v, want %v", n, got, n >= whole)
		}
	}
	for _, body := range []string{
		"SERROR\x00VERROR\x00C22012\x00Mdivision by zero\x00\x00", // another error
		"SFATAL\x00VFATAL\x00C57014\x00\x00",                      // not an ERROR
		"SNOTICE\x00VNOTICE\x00C57014\x00\x00",                    // a notice
		"SERROR\x00C57014\x00Mcanceling statement\x00\x00",        // no V field
		"SERROR\x00VERROR\x00C570140\x00\x00",                     // not the code
		"",
	} {
		if AnswersCancel([]byte(body)) {
			t.Errorf("AnswersCancel(%q) = true", body)
		}
	}
}
