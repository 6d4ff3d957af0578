package client_test

import (
	"testing"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// A server's NegotiateProtocolVersion (the local client asked for a newer
// protocol) reaches the local client, and the password request after it
// is still the proxy's to answer: the local client sees AuthenticationOk.
func TestExchangeAfterNegotiateProtocolVersion(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: iamTarget})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice"))
	server := tun.next(t)
	readStartup(t, server)
	readMsg(t, server) // the token
	write(t, server, pgwire.AppendNegotiateProtocolVersion(nil, pgwire.Protocol30, nil))
	if m := readMsg(t, local); m.Type != pgwire.MsgNegotiateProtocol {
		t.Fatalf("local got %q, want NegotiateProtocolVersion", m.Type)
	}
	write(t, server, pgwire.AppendAuthCleartext(nil))
	write(t, server, appendReady(appendAuthOK(nil)))
	if m := readMsg(t, local); m.AuthCode() != pgwire.AuthOK {
		t.Fatalf("local got %q (auth code %d), want AuthenticationOk", m.Type, m.AuthCode())
	}
}

// With striping on, the client offers one stripe per session of its tunnel
// (one here) and no compression when it is off; an answer it cannot read
// ends the connection with 08P01, and nothing of the server's reaches the
// local client.
func TestStripingOffer(t *testing.T) {
	ln, tun := startProxy(t, client.Config{Target: iamTarget, Striping: true, NoCompression: true})
	local := ln.dial(t)
	write(t, local, startupMsg("user", "alice"))
	server := tun.next(t)
	st := readStartup(t, server)
	offer, _ := st.Params.Get(contract.TransportParam)
	if offer != "v=1;k=1" {
		t.Fatalf("offer %q, want v=1;k=1 (one session, no compression)", offer)
	}
	readMsg(t, server) // the token
	write(t, server, pgwire.AppendAuthCleartext(nil))
	write(t, server, pgwire.AppendParameterStatus(nil, contract.TransportParam, "v=9"))
	e := decodeError(t, readMsg(t, local))
	if e.Code != "08P01" {
		t.Fatalf("local got %s %q, want 08P01 for an unreadable answer", e.Code, e.Message)
	}
}
