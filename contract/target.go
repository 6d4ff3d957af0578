package contract

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Auth says how the server authenticates a session to a target.
type Auth string

const (
	// AuthIAM: the client sends an RDS IAM token as its password; the
	// server pre-validates it and answers the upstream's cleartext
	// password request with it.
	AuthIAM Auth = "iam"
	// AuthPassthrough: the upstream's authentication exchange (md5,
	// SCRAM, …) travels end to end between client and upstream, unmodified.
	AuthPassthrough Auth = "passthrough"
)

// TLSMode is how the server secures its connection to a target.
type TLSMode string

const (
	// TLSVerifyFull requires TLS and verifies the certificate chain and the
	// endpoint's host name. The default, and the only mode for IAM targets.
	TLSVerifyFull TLSMode = "verify-full"
	// TLSDisable sends plaintext. Only for passthrough static targets that
	// the operator declares, e.g. an in-cluster PostgreSQL without TLS.
	TLSDisable TLSMode = "disable"
)

// Target is one database the server relays to, as GET /v1/targets lists
// it; it holds no secrets. JSON and YAML spell its fields alike, as the
// server's configuration file does (read-only, local-port).
type Target struct {
	// Name is unique within a snapshot; clients ask for targets by name.
	Name string `json:"name" yaml:"name"`
	// Endpoint is the database's host:port as AWS reports it (or as the
	// config file states it). IAM tokens are signed for this endpoint and
	// TLS verifies its host name.
	Endpoint string  `json:"endpoint" yaml:"endpoint"`
	Region   string  `json:"region,omitempty" yaml:"region,omitempty"`
	Auth     Auth    `json:"auth" yaml:"auth"`
	TLS      TLSMode `json:"tls" yaml:"tls"`
	// Engine is postgres or aurora-postgresql (empty for static targets).
	Engine string `json:"engine,omitempty" yaml:"engine,omitempty"`
	// Role is instance, writer or reader.
	Role string `json:"role,omitempty" yaml:"role,omitempty"`
	// Identifier is the DB instance or cluster identifier.
	Identifier string `json:"identifier,omitempty" yaml:"identifier,omitempty"`
	// Database is the default database name (tag rdsproxy:db-name).
	Database string `json:"database,omitempty" yaml:"database,omitempty"`
	// LocalPort is the client's preferred listen port (tag rdsproxy:local-port).
	LocalPort int `json:"local-port,omitempty" yaml:"local-port,omitempty"`
	// Users, when not empty, are the only DB users the server relays for.
	Users []string `json:"users,omitempty" yaml:"users,omitempty"`
	// ReadOnly makes every session start with default_transaction_read_only=on.
	ReadOnly bool `json:"read-only,omitempty" yaml:"read-only,omitempty"`
	// Principals, when not empty, are ARN globs (tag rdsproxy:principals):
	// only callers whose verified identity matches one reach the target.
	Principals []string `json:"principals,omitempty" yaml:"principals,omitempty"`
	// Source is static, rds-instance or rds-cluster.
	Source string `json:"source" yaml:"source,omitempty"`
}

// UnmarshalJSON also reads local_port and read_only, as servers before
// the spelling was unified sent them.
func (t *Target) UnmarshalJSON(b []byte) error {
	type plain Target
	var v struct {
		plain
		OldLocalPort int  `json:"local_port"`
		OldReadOnly  bool `json:"read_only"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*t = Target(v.plain)
	if t.LocalPort == 0 {
		t.LocalPort = v.OldLocalPort
	}
	t.ReadOnly = t.ReadOnly || v.OldReadOnly
	return nil
}

// Validate reports the first problem that would make the target unusable.
func (t *Target) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("target has no name")
	}
	if _, _, err := SplitEndpoint(t.Endpoint); err != nil {
		return fmt.Errorf("target %q: %w", t.Name, err)
	}
	switch t.Auth {
	case AuthIAM:
		if t.Region == "" {
			return fmt.Errorf("target %q: IAM authentication needs a region", t.Name)
		}
		if t.TLS != TLSVerifyFull {
			return fmt.Errorf("target %q: IAM targets always use tls verify-full, not %q", t.Name, t.TLS)
		}
	case AuthPassthrough:
		if t.TLS != TLSVerifyFull && t.TLS != TLSDisable {
			return fmt.Errorf("target %q: tls must be verify-full or disable, not %q", t.Name, t.TLS)
		}
	default:
		return fmt.Errorf("target %q: auth must be iam or passthrough, not %q", t.Name, t.Auth)
	}
	return nil
}

// AllowsUser reports whether the target's user list admits user.
func (t *Target) AllowsUser(user string) bool {
	if len(t.Users) == 0 {
		return true
	}
	for _, u := range t.Users {
		if u == user {
			return true
		}
	}
	return false
}

// SplitEndpoint splits host:port and checks both parts.
func SplitEndpoint(endpoint string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(endpoint)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint %q is not host:port: %w", endpoint, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("endpoint %q has an invalid port", endpoint)
	}
	if h == "" {
		return "", 0, fmt.Errorf("endpoint %q has no host", endpoint)
	}
	return strings.ToLower(h), n, nil
}
