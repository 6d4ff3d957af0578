package ssm_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// With a lane, the tunnel runs one session more than Sessions: DialLane's
// stream crosses the lane and its siblings the other sessions; Dial never
// takes the lane. Every stream carries bytes both ways.
func TestLane(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port(), Sessions: 2, Lane: true})
	first, err := tun.DialLane(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sp := first.(tunnel.Spreader)
	if !sp.Lane() || sp.Sessions() != 3 {
		t.Fatalf("DialLane: lane %v over %d sessions; want the lane of 3", sp.Lane(), sp.Sessions())
	}
	streams := []tunnel.Spreader{sp}
	for i := 1; i < 3; i++ {
		c, err := sp.DialBeside(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, c.(tunnel.Spreader))
	}
	for range 4 {
		c, err := tun.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, c.(tunnel.Spreader))
	}
	for i, s := range streams {
		if i > 0 && s.Lane() {
			t.Errorf("stream %d crosses the lane; only DialLane's may", i)
		}
		if i > 0 && s.Sessions() != 2 {
			t.Errorf("stream %d spreads over %d sessions; want the 2 besides the lane", i, s.Sessions())
		}
		if err := echoRoundTrip(t.Context(), s.(net.Conn), 1000, uint64(i)); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if n := e.Stats().SessionsStarted; n != 3 {
		t.Errorf("%d sessions started; want Sessions+1 = 3", n)
	}
}

// A basic-mode agent carries one connection per session and no striping,
// so a lane would only queue every connection behind the first: the
// tunnel drops it, and connections opened over "the lane" run at once
// over sessions of their own.
func TestLaneBasicMode(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{AgentVersion: "3.0.196.0"})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port(), Sessions: 2, Lane: true})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var conns []net.Conn
	for i := range 2 {
		c, err := tun.DialLane(ctx)
		if err != nil {
			t.Fatalf("connection %d over the lane of a basic-mode tunnel: %v", i, err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, c := range conns {
		if err := echoRoundTrip(ctx, c, 10<<10, uint64(i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if n := e.Stats().SessionsStarted; n != 2 {
		t.Errorf("%d sessions started; want Sessions = 2, with no lane", n)
	}
}
