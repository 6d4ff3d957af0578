package ssmendpoint

import (
	"strconv"
	"strings"
)

// compareVersions orders dotted numeric versions the way the agent's
// versionutil does for our purposes: component-wise numerically, and on a
// common prefix the version with fewer components is smaller. ok is false
// when either does not parse (the agent then takes the conservative path).
func compareVersions(a, b string) (cmp int, ok bool) {
	pa, okA := parseVersion(a)
	pb, okB := parseVersion(b)
	if !okA || !okB {
		return 0, false
	}
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1, true
			}
			return 1, true
		}
	}
	switch {
	case len(pa) < len(pb):
		return -1, true
	case len(pa) > len(pb):
		return 1, true
	}
	return 0, true
}

func parseVersion(v string) ([]int, bool) {
	if v == "" {
		return nil, false
	}
	parts := strings.Split(v, ".")
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

func versionAtLeast(v, min string) bool {
	c, ok := compareVersions(v, min)
	return ok && c >= 0
}

func versionAbove(v, than string) bool {
	c, ok := compareVersions(v, than)
	return ok && c > 0
}

// agentMode is the agent's choice for one session (§9.1): mux needs an agent
// that has smux (> 3.0.196.0) and a client ≥ 1.1.70; agents newer than
// 3.1.1511.0 turn smux keep-alive off for clients > 1.2.331.0.
type agentMode struct {
	mux, keepAliveDisabled bool
}

func modeFor(agentVersion, clientVersion string) agentMode {
	mux := versionAbove(agentVersion, "3.0.196.0") && versionAtLeast(clientVersion, "1.1.70")
	return agentMode{
		mux:               mux,
		keepAliveDisabled: mux && versionAbove(agentVersion, "3.1.1511.0") && versionAbove(clientVersion, "1.2.331.0"),
	}
}
