package contract

import "strings"

// RoutinePrefix starts the Routine field of rdsproxy's own ErrorResponses.
// PostgreSQL puts a C function's name there (auth_failed), which libpq
// and psql show only in verbose reports and never for a failed
// connection; JDBC shows it as "Routine: rdsproxy:unknown-target".
const RoutinePrefix = "rdsproxy:"

// Routine is the Routine field that carries reason.
func Routine(reason string) string { return RoutinePrefix + reason }

// ReasonOf returns the reason a Routine field carries, or "" and false
// when the ErrorResponse is not rdsproxy's but the database's, forwarded.
func ReasonOf(routine string) (string, bool) {
	reason, ours := strings.CutPrefix(routine, RoutinePrefix)
	if !ours {
		return "", false
	}
	return reason, true
}

// Reasons say why rdsproxy refused or ended a connection. They are fixed
// labels, never user input: the server and the client send them in the
// Routine field of their ErrorResponses (see Routine) and write them in
// audit lines and metrics. Programs such as `rdsproxy doctor` branch on
// the SQLSTATE and the reason, never on the message. An upstream
// database's own refusals are forwarded unchanged.
const (
	// The startup itself.
	ReasonProtocol          = "protocol"           // 08P01: not a startup rdsproxy can read
	ReasonRepeatedParameter = "repeated-parameter" // 08P01: a startup parameter given twice
	ReasonTLSRequired       = "tls-required"       // 28000: the server accepts only TLS
	ReasonStartupTimeout    = "startup-timeout"    // 08006: the client was too slow
	ReasonEvicted           = "evicted"            // 53300: closed to make room for new startups
	ReasonTooManySessions   = "too-many-sessions"  // 53300
	ReasonShutdown          = "shutdown"           // 57P01
	ReasonRevoked           = "revoked"            // 57P01: the target no longer admits a running session
	ReasonStripeJoin        = "stripe-join"        // 08P01: a stripe named no connection that takes stripes
	ReasonServerLost        = "server-lost"        // 08006: the client's stream to the server failed mid-session

	// Routing and authorisation, before anything is dialled.
	ReasonNoTarget       = "no-target"        // 28000
	ReasonNotReady       = "not-ready"        // 08001: no target list loaded yet
	ReasonUnknownTarget  = "unknown-target"   // 28000
	ReasonUserNotAllowed = "user-not-allowed" // 28000: not in the target's users
	ReasonAuthThrottled  = "auth-throttled"   // 28P01: too many failed logins
	// ReasonTokenPrefix starts the reasons of a refused IAM token (28P01),
	// followed by iamtoken's reason: token-expired, token-host, ...
	ReasonTokenPrefix = "token-"

	// Caller identity.
	ReasonIdentityWrongServer    = "identity-wrong-server" // 28000: signed for another server id
	ReasonIdentityKeyMismatch    = "identity-key-mismatch"
	ReasonIdentityExpired        = "identity-expired"
	ReasonIdentityMalformed      = "identity-malformed"
	ReasonIdentityMissing        = "identity-missing"
	ReasonIdentityRefused        = "identity-refused"
	ReasonIdentitySTSUnreachable = "identity-sts-unreachable"
	ReasonPrincipalUnknown       = "principal-unknown"
	ReasonPrincipalNotAllowed    = "principal-not-allowed"

	// The server's login to the target.
	ReasonUpstreamDial       = "upstream-dial"        // 08001
	ReasonUpstreamNoTLS      = "upstream-no-tls"      // 08001
	ReasonUpstreamTLS        = "upstream-tls"         // 08001
	ReasonUpstreamAuthMethod = "upstream-auth-method" // 08001 or 0A000
	ReasonUpstreamTimeout    = "upstream-timeout"     // 08006
	ReasonUpstreamIO         = "upstream-io"          // 08006

	// The client (rdsproxy connect) itself.
	ReasonClientToken    = "token"    // 28000: no IAM token could be signed
	ReasonClientIdentity = "identity" // 28000: no caller identity could be signed
	ReasonTunnel         = "tunnel"   // 08001 or 08006: the tunnel to the server failed
)
