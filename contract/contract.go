// Package contract is the wire contract between rdsproxy's client and
// server, the one place both sides agree on it: the target record and
// GET /v1/targets, the startup parameter that names a target, and the
// reasons a connection is refused, which travel in the ErrorResponse's
// Routine field so that programs branch on them instead of on messages.
// It imports nothing of rdsproxy's: client, server, discovery and the CLI
// all import it. docs/architecture.md §2 describes the contract.
package contract

// TargetsPath is where the server lists its targets (HTTP GET on the
// PostgreSQL port, inside TLS when the server has a certificate).
const TargetsPath = "/v1/targets"

// TargetParam is the startup parameter that names the target. Clients may
// also send it inside options, as -c rdsproxy.target=NAME.
const TargetParam = "rdsproxy.target"

// TargetList is the body of a successful GET /v1/targets. Identity tells
// clients how to sign their caller identity (absent when the server
// checks none); Caller is who the request's identity header proved, and
// then Targets holds only the targets that caller may reach.
type TargetList struct {
	Targets  []Target    `json:"targets"`
	Identity *ServerInfo `json:"identity,omitempty"`
	Caller   *Principal  `json:"caller,omitempty"`
}

// Refusal is the JSON body of a refused GET /v1/targets. Identity, when
// set, says how to sign the identity the server asks for.
type Refusal struct {
	Error    string      `json:"error"`
	Reason   string      `json:"reason,omitempty"`
	Identity *ServerInfo `json:"identity,omitempty"`
}

// ServerInfo is what a server tells clients about its identity check: the
// id to sign into the identity, the STS region to sign for, and whether
// connections without identity are refused.
type ServerInfo struct {
	ServerID string `json:"server_id"`
	Region   string `json:"region"`
	Required bool   `json:"required"`
}

// Principal is a caller as STS names it, with the form target rules match.
type Principal struct {
	// ARN is the caller's ARN as GetCallerIdentity returns it.
	ARN string `json:"arn"`
	// Account is the 12-digit AWS account.
	Account string `json:"account"`
	// Normalized is ARN with an assumed role replaced by its role:
	// arn:aws:sts::ACCT:assumed-role/ROLE/SESSION becomes
	// arn:aws:iam::ACCT:role/ROLE. Other ARNs are unchanged.
	Normalized string `json:"principal"`
	// Session is an assumed role's session name (for SSO users, the
	// person), else empty.
	Session string `json:"session,omitempty"`
}
