package client

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
)

// laneTunnelDouble counts the streams opened over its lane and beside it.
type laneTunnelDouble struct{ dials, lanes int }

func (l *laneTunnelDouble) Dial(context.Context) (net.Conn, error) {
	l.dials++
	return pipeEnd(), nil
}

func (l *laneTunnelDouble) DialLane(context.Context) (net.Conn, error) {
	l.lanes++
	return pipeEnd(), nil
}

func (l *laneTunnelDouble) Close() error { return nil }

func pipeEnd() net.Conn {
	a, b := net.Pipe()
	b.Close()
	return a
}

// After a server took a lane offer without the lane, new connections keep
// off the lane until the retry time has passed, and then offer it again.
func TestLaneRetry(t *testing.T) {
	tun := &laneTunnelDouble{}
	p := &Proxy{cfg: Config{Tunnel: tun, Striping: true, Target: contract.Target{Auth: contract.AuthIAM}},
		log: slog.New(slog.DiscardHandler)}
	dial := func() {
		t.Helper()
		c, err := p.dialServer(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	dial()
	p.laneOff("the server kept it raw")
	dial()
	if tun.lanes != 1 || tun.dials != 1 {
		t.Fatalf("before and after lane-off: %d lane and %d other streams; want 1 and 1", tun.lanes, tun.dials)
	}
	if until := p.laneOffUntil.Load(); until == nil || time.Until(*until) < laneRetry-time.Second {
		t.Fatalf("lane off until %v; want about %v from now", until, laneRetry)
	}
	past := time.Now().Add(-time.Millisecond)
	p.laneOffUntil.Store(&past) // the retry time has passed
	dial()
	if tun.lanes != 2 {
		t.Fatalf("after the retry time: %d lane streams; want the lane offered again", tun.lanes)
	}
}
