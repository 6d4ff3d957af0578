package contract

import (
	"strings"
	"testing"
)

// A transport offer and answer survive their text form; values a server
// or client cannot use are refused, and keys a later version may add are
// ignored.
func TestTransportText(t *testing.T) {
	for _, want := range []Transport{
		{Version: 1, Stripes: 4, Compress: "zstd", ID: "00ff"},
		{Version: 1, Stripes: 5, Lane: true},
	} {
		got, err := ParseTransport(want.String())
		if err != nil || got != want {
			t.Fatalf("ParseTransport(%q) = %+v, %v", want.String(), got, err)
		}
	}
	if got, err := ParseTransport("v=1;k=2;later=yes"); err != nil || got.Stripes != 2 || got.Compress != "" {
		t.Errorf("an unknown key: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "k=4", "v=1", "v=1;k=0", "v=1;k=17", "v=x;k=1", "v=1;k=1;junk"} {
		if _, err := ParseTransport(bad); err == nil || !strings.Contains(err.Error(), "transport") {
			t.Errorf("ParseTransport(%q) = %v, want an error", bad, err)
		}
	}
}
