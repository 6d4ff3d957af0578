// Package ssm is a native AWS Systems Manager Session Manager port-forwarding
// transport: it replaces session-manager-plugin for the documents
// AWS-StartPortForwardingSession and AWS-StartPortForwardingSessionToRemoteHost.
// It knows nothing about what flows through the tunnel.
//
// Data flow, per session (see docs/ssm-protocol.md for the protocol; a bare §x.y in this
// package's comments is a section of that file):
//
//	Dial ─► smux stream ─► smux client session ─► dataPipe.Write (≤1024-byte chunks)
//	      ─► Channel.Send (sequence number, kept until acked, retransmitted)
//	      ─► Message.Encode ─► websocket binary frame ─► service ─► agent ─► destination
//
//	websocket read loop ─► Decode ─► Channel.Handle: acks release sent
//	messages, stream messages are reordered and handed in sequence order to
//	the session (handshake payloads to the handshake, Output bytes to
//	dataPipe.Read ─► smux ─► the stream's reader); their acks go to a bounded
//	queue that Channel.Run's writer sends, so the read loop never waits on
//	the websocket.
//
// A session is StartSession (API) → websocket to StreamUrl → OpenDataChannel
// text frame → HandshakeRequest/Response/Complete → smux client (or basic
// mode, one connection at a time, for agents ≤ 3.0.196.0). A lost websocket
// is resumed (ResumeSession, new websocket, same sequence numbers); when the
// service says the session is over, its streams fail with a
// SessionEndedError. A Tunnel spreads Dials over Config.Sessions sessions,
// replaces a session that died, and Close terminates them (TerminateSession
// flag and API). FindInstance finds the server's instance by its EC2 tag.
//
// Against an agent older than 3.2.1041.0, which never re-acks a duplicate,
// a lost ack is never repaired: a message resent while later ones are
// acked on the same websocket is presumed delivered (Channel.proveLocked),
// an idle session sends an smux NOP to learn it, and the session gives up
// only when no ack at all arrives (ChannelConfig.GiveUp).
//
// The codec (Message, Decode) and the reliable stream (Channel) are
// exported for tests and tools; the sandbox SSM endpoint implements the
// agent side independently and shares none of this code.
package ssm
