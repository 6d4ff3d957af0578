package pgwire

import (
	"bytes"
	"testing"
)

// FuzzReadStartup: any input either decodes or errors, never panics, and
// never consumes bytes past the declared packet length.
func FuzzReadStartup(f *testing.F) {
	f.Add(AppendStartup(nil, protocolV3, Params{{"user", "u"}, {"options", "-c rdsproxy.target=x"}}))
	f.Add(AppendSSLRequest(nil))
	f.Add(AppendCancel(nil, CancelKey{PID: 1, Secret: "abcd"}))
	f.Add([]byte{0x16, 0x03, 0x01, 0, 5})
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		s, err := ReadStartup(r, 1024)
		consumed := len(in) - r.Len()
		if err == nil && consumed > 1024 {
			t.Fatalf("consumed %d bytes, limit 1024", consumed)
		}
		if err == nil && s.Kind == KindStartup {
			// Round trip: re-encoding the decoded params yields the same packet.
			if got := AppendStartup(nil, s.Protocol, s.Params); !bytes.Equal(got, in[:consumed]) {
				t.Fatalf("re-encoded %x, read %x", got, in[:consumed])
			}
			seen := map[string]bool{}
			for _, kv := range s.Params {
				if seen[kv.Key] {
					t.Fatalf("decoded a startup that repeats %q", kv.Key)
				}
				seen[kv.Key] = true
			}
			TakeTarget(s.Params)
		}
	})
}

// FuzzReadMessage: a declared length is honoured and bounded.
func FuzzReadMessage(f *testing.F) {
	f.Add(AppendAuthCleartext(nil))
	f.Add(AppendPassword(nil, "token"))
	f.Add([]byte{'K', 0, 0, 0, 12, 0, 0, 0, 1, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		m, err := ReadMessage(r, nil, 256)
		if err != nil {
			return
		}
		if len(m.Raw) > 256 || len(in)-r.Len() != len(m.Raw) {
			t.Fatalf("message of %d bytes, consumed %d", len(m.Raw), len(in)-r.Len())
		}
		PasswordText(m)
		BackendKey(m)
		m.AuthCode()
	})
}

// FuzzTakeTarget: options splitting and rejoining never panics and is stable.
func FuzzTakeTarget(f *testing.F) {
	f.Add(`-c rdsproxy.target=a -c x=y\ z`)
	f.Add(`--rdsproxy.target=b \\`)
	f.Fuzz(func(t *testing.T, opts string) {
		rest, _ := StripReserved(Params{{"options", opts}})
		if o, ok := rest.Get("options"); ok {
			again, _ := StripReserved(Params{{"options", o}})
			if o2, _ := again.Get("options"); o2 != o {
				t.Fatalf("options not stable: %q -> %q", o, o2)
			}
		}
	})
}
