package pgwire

import (
	"bytes"
	"testing"
)

// ParameterStatus reads back what AppendParameterStatus wrote, and refuses
// other messages and malformed bodies.
func TestParameterStatus(t *testing.T) {
	raw := AppendParameterStatus(nil, "rdsproxy.transport", "v=1;k=4")
	m, err := ReadMessage(bytes.NewReader(raw), nil, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if name, value, ok := ParameterStatus(m); !ok || name != "rdsproxy.transport" || value != "v=1;k=4" {
		t.Fatalf("ParameterStatus = %q %q %v", name, value, ok)
	}
	for _, bad := range []Message{
		{Type: MsgAuth, Raw: AppendAuthCleartext(nil)},
		{Type: MsgParameterStatus, Raw: []byte{'S', 0, 0, 0, 6, 'a', 0}},              // no value
		{Type: MsgParameterStatus, Raw: []byte{'S', 0, 0, 0, 9, 'a', 0, 'b', 0, 'c'}}, // trailing bytes
	} {
		if _, _, ok := ParameterStatus(bad); ok {
			t.Errorf("ParameterStatus(%q) ok", bad.Raw)
		}
	}
}
