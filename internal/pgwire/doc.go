// Package pgwire holds the PostgreSQL startup-phase helpers both proxies
// share: bounded reads of startup packets and typed messages, the SSL, GSS
// and cancel request codes, ErrorResponse construction with SQLSTATEs, and
// the rdsproxy.target startup parameter of the wire contract.
//
// Everything here reads exactly the bytes it declares and never buffers
// ahead, so that a caller handing a connection to the byte relay loses
// nothing. After startup no message is decoded: the relay moves raw bytes.
//
// docs/architecture.md §2 is the wire contract these helpers implement.
package pgwire
