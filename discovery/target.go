// Package discovery decides which databases the server relays to.
//
// Data flows one way: sources (static targets from the config file, RDS
// instances and Aurora clusters found by tags) produce []Target, NewSnapshot
// turns them into an immutable Snapshot, and the server reads the current
// Snapshot for every connection. A Snapshot is never modified after it is
// built; a refresh builds a new one and swaps it in atomically.
//
// docs/architecture.md §3 describes the rules and names.
package discovery

import "github.com/rdsproxy/rdsproxy/contract"

// The target record is part of the wire contract between client and
// server; discovery produces it. These names keep discovery's vocabulary.
type (
	Target  = contract.Target
	Auth    = contract.Auth
	TLSMode = contract.TLSMode
)

const (
	AuthIAM         = contract.AuthIAM
	AuthPassthrough = contract.AuthPassthrough
	TLSVerifyFull   = contract.TLSVerifyFull
	TLSDisable      = contract.TLSDisable
)

// SplitEndpoint splits host:port and checks both parts.
func SplitEndpoint(endpoint string) (host string, port int, err error) {
	return contract.SplitEndpoint(endpoint)
}
