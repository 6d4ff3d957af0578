// Package tunnel defines how the client reaches the server: a Tunnel dials
// byte streams to the server's port. Transports (direct TCP/TLS here, SSM
// Session Manager in tunnel/ssm, Kubernetes port-forward in tunnel/kube)
// know nothing about PostgreSQL.
//
// docs/architecture.md §4 shows where a tunnel sits in a connection's
// path; docs/ssm-protocol.md describes the SSM data channel.
package tunnel

import (
	"context"
	"net"
)

// Tunnel opens streams to the rdsproxy server. Implementations are safe for
// concurrent use. A stream must behave like a TCP connection: ordered,
// reliable, Close ends it; CloseWrite (if implemented) half-closes it.
type Tunnel interface {
	// Dial opens a new stream to the server. It honours ctx for the time
	// it takes to open the stream only.
	Dial(ctx context.Context) (net.Conn, error)
	// Close ends the tunnel and every stream it opened.
	Close() error
}

// Fanout is implemented by tunnels that spread streams over several server
// replicas (instances or pods). A CancelRequest must reach the replica that
// carries its session, and only that replica knows the session's key, so
// the client opens one stream to every healthy replica with DialEach and
// sends the CancelRequest on each; the others drop an unknown key, as
// PostgreSQL does. On a tunnel without Fanout the client uses Dial.
type Fanout interface {
	// DialEach opens one stream to each healthy replica. It returns the
	// streams it could open and an error only when it opened none.
	DialEach(ctx context.Context) ([]net.Conn, error)
}

// LaneDialer is implemented by tunnels that keep one session as a lane for
// small messages (tunnel/ssm's Config.Lane): DialLane opens a stream over
// it, whose Spreader siblings go over the other sessions. Without a lane it
// dials as Dial does.
type LaneDialer interface {
	DialLane(ctx context.Context) (net.Conn, error)
}

// Spreader is implemented by streams that can open further streams to the
// same server replica, each over another transport session where the
// tunnel has several (SSM sessions, which the agent caps one by one). A
// striped connection (internal/stripe) opens its further stripes with it.
type Spreader interface {
	// DialBeside opens a stream to this stream's replica, over another
	// of the tunnel's sessions: for i from 1 to Sessions()-1, each over
	// a different one, never the lane. It honours ctx for the opening only.
	DialBeside(ctx context.Context, i int) (net.Conn, error)
	// Sessions is how many sessions this stream and its siblings can
	// spread over (the lane counts only for a stream that crosses it).
	Sessions() int
	// Lane reports whether this stream crosses the tunnel's lane (see
	// LaneDialer), which its siblings leave for small messages.
	Lane() bool
}
