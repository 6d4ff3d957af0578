package ssm

import (
	"strconv"
	"strings"
)

// Agent-version thresholds the plugin applies (docs/ssm-protocol.md §9.1).
const (
	muxMinAgentVersion        = "3.0.196.0"  // strictly greater: smux mode
	keepAliveOffAgentVersion  = "3.1.1511.0" // strictly greater: smux keep-alive off
	terminateFlagAgentVersion = "2.3.722.0"  // strictly greater: TerminateSession flag in basic mode
	reackAgentVersion         = "3.2.1040.0" // strictly greater (3.2.1041.0 on): duplicates re-acked

	// DefaultClientVersion is sent in OpenDataChannel and the
	// HandshakeResponse. It is a released plugin version greater than
	// 1.2.331.0, so agents choose smux with keep-alive off (§8.3).
	DefaultClientVersion = "1.2.650.0"
	minClientVersion     = "1.2.331.0"
)

// versionGreater reproduces the plugin's comparison: numeric components,
// strictly greater, and false when the component counts differ or a
// component does not parse.
func versionGreater(v, than string) bool {
	a, b := strings.Split(v, "."), strings.Split(than, ".")
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, err1 := strconv.Atoi(a[i])
		y, err2 := strconv.Atoi(b[i])
		if err1 != nil || err2 != nil || x < 0 || y < 0 {
			return false
		}
		if x != y {
			return x > y
		}
	}
	return false
}

// agentMode is what the client derives from the agent's version (§9.1).
type agentMode struct {
	mux               bool // smux; otherwise basic mode
	keepAliveDisabled bool // smux keep-alive off
	terminateFlag     bool // basic mode: TerminateSession flag understood
	reacks            bool // duplicates re-acked (§7.3)
}

func modeForAgent(agentVersion string, portForwarding bool) agentMode {
	return agentMode{
		mux:               portForwarding && versionGreater(agentVersion, muxMinAgentVersion),
		keepAliveDisabled: versionGreater(agentVersion, keepAliveOffAgentVersion),
		terminateFlag:     versionGreater(agentVersion, terminateFlagAgentVersion),
		reacks:            versionGreater(agentVersion, reackAgentVersion),
	}
}
