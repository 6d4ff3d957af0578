package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TransportParam is the startup parameter with which a client offers the
// striped transport (internal/stripe) for the hop to the server, and the
// name of the ParameterStatus with which a server takes the offer. A
// server that does not know it drops it with every other rdsproxy.*
// parameter and answers as always, so the client keeps the raw stream.
const TransportParam = "rdsproxy.transport"

// JoinParam, in the StartupMessage of a further stream, names the striped
// connection the stream joins (Transport.ID). The server answers a join
// with a ParameterStatus of the same name, or refuses it.
const JoinParam = "rdsproxy.join"

// TransportVersion is the striped transport's only version.
const TransportVersion = 1

// MaxTransportStripes bounds the stripes a client may offer.
const MaxTransportStripes = 16

// Transport is an offer (client) or the mode taken (server). Its text
// form is "v=1;k=4;z=zstd", plus ";l=1" when the first stripe is a lane,
// and ";id=…" in the server's answer.
type Transport struct {
	Version  int    // TransportVersion
	Stripes  int    // streams the connection spreads over, 1..MaxTransportStripes
	Compress string // "zstd", or "" for none
	// Lane: the first stripe crosses a session that carries no bulk (the
	// tunnel's lane), so each end sends its small frames there and its
	// large ones over the other stripes. A server that knows lanes echoes
	// it; an older one drops the key and both ends treat every stripe
	// alike.
	Lane bool
	ID   string // the server's answer: 32 hex digits that further stripes join with
}

// String is the parameter value.
func (t Transport) String() string {
	s := fmt.Sprintf("v=%d;k=%d", t.Version, t.Stripes)
	if t.Compress != "" {
		s += ";z=" + t.Compress
	}
	if t.Lane {
		s += ";l=1"
	}
	if t.ID != "" {
		s += ";id=" + t.ID
	}
	return s
}

// ParseTransport reads a parameter value. Unknown keys are ignored (a
// later version may add some); a bad value of a known key is an error.
func ParseTransport(s string) (Transport, error) {
	var t Transport
	for field := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return Transport{}, fmt.Errorf("transport %q: field %q is not key=value", s, field)
		}
		var err error
		switch k {
		case "v":
			t.Version, err = strconv.Atoi(v)
		case "k":
			t.Stripes, err = strconv.Atoi(v)
		case "z":
			t.Compress = v
		case "l":
			t.Lane = v == "1"
		case "id":
			t.ID = v
		}
		if err != nil {
			return Transport{}, fmt.Errorf("transport %q: %s: %w", s, k, err)
		}
	}
	if t.Version < 1 {
		return Transport{}, errors.New("transport " + strconv.Quote(s) + ": no version")
	}
	if t.Stripes < 1 || t.Stripes > MaxTransportStripes {
		return Transport{}, fmt.Errorf("transport %q: %d stripes, want 1..%d", s, t.Stripes, MaxTransportStripes)
	}
	return t, nil
}
