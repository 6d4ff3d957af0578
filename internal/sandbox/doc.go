// Package sandbox runs, on one machine and without an AWS account, the
// pieces rdsproxy talks to in production: a PostgreSQL 15 cluster, a sandbox
// certificate authority, and an RDS IAM emulator (and, in sibling files and
// packages, moto and an SSM endpoint). Tests, `make demo` and `make bench`
// use it.
//
// Data flow:
//
//	client ──TLS (sandbox CA cert for the RDS endpoint names)──▶ Emulator
//	    Emulator: SSLRequest → 'S' → TLS; StartupMessage → cleartext password
//	    request; PasswordMessage = IAM token, verified as RDS does by the
//	    emulator's own code (SigV4 presigned signature with the sandbox
//	    credentials, connect action, DBUser, rds-db scope and region,
//	    X-Amz-Expires at most 900 s, expiry, endpoint host and SNI,
//	    membership in rds_iam)
//	Emulator ──unix socket, trust──▶ PostgreSQL (StartPostgres)
//	    the client's StartupMessage is forwarded, then bytes are relayed raw
//	    both ways, so BackendKeyData is PostgreSQL's own and CancelRequests
//	    forwarded by the emulator reach the right backend.
//
// StartPostgres owns its server process: it starts it in its own process
// group with a parent-death signal, and Close stops it. When the test binary
// runs as root (CI containers), initdb and postgres run as the "postgres"
// user if it exists, else "nobody".
//
// Everything is configured by arguments; the exported constants are the
// fixed sandbox credentials and role names, not mutable state.
//
// docs/architecture.md §7 describes the sandbox as a whole.
package sandbox
