package ssm_test

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestConcurrentStreamsLossy: 16 streams over one session, 5% loss plus
// duplication and reordering both ways, a not-ready window after the
// handshake; 50 MB each way, checksummed. Like the real service, the
// endpoint keeps the session for ResumeSession when a websocket drops (a
// loaded machine once reset one here), so only a lost byte can fail it.
func TestConcurrentStreamsLossy(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{NotReady: 200 * time.Millisecond, Unpaced: true, ResumeGrace: time.Minute,
		Faults: ssmendpoint.Faults{DropPercent: 5, ReorderPercent: 5, DuplicatePercent: 1, Seed: 42}})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
	const streams, total = 16, 50 << 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tun.Dial(t.Context())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := echoRoundTrip(t.Context(), c, total/streams, uint64(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := e.Stats()
	if st.SessionsStarted != 1 || st.StreamsAccepted != streams {
		t.Errorf("sessions %d streams %d, want 1 and %d", st.SessionsStarted, st.StreamsAccepted, streams)
	}
	cs := tun.Stats()
	if cs.Resent == 0 || cs.Duplicates == 0 || cs.Early == 0 {
		t.Errorf("faults not exercised on the client: %+v", cs)
	}
	t.Logf("endpoint stats: %+v", st)
	t.Logf("client stats: %+v", cs)
}

// TestBasicModeSequential: an agent ≤ 3.0.196.0 gets basic mode; connections
// run one after another with DisconnectToPort between them.
func TestBasicModeSequential(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{AgentVersion: "3.0.196.0", NotReady: 100 * time.Millisecond})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
	for i := range 3 {
		c, err := tun.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := echoRoundTrip(t.Context(), c, 100<<10+i, uint64(i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Stats()
	if st.SessionsStarted != 1 || st.DisconnectToPort != 3 || st.StreamsAccepted != 0 {
		t.Errorf("stats %+v: want 1 session, 3 DisconnectToPort flags, no smux streams", st)
	}
}

// TestAgentVersions: mux with keep-alive on for a middle agent version,
// mux with keep-alive off for a current one; data flows either way.
func TestAgentVersions(t *testing.T) {
	for _, v := range []string{"3.1.1000.0", "3.1.1512.0", "3.3.987.0"} {
		t.Run(v, func(t *testing.T) {
			echo := startEcho(t)
			e := startEndpoint(t, ssmendpoint.Config{AgentVersion: v})
			tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
			c, err := tun.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := echoRoundTrip(t.Context(), c, 64<<10, 1); err != nil {
				t.Fatal(err)
			}
			if st := e.Stats(); st.StreamsAccepted != 1 {
				t.Errorf("streams accepted %d, want 1 (mux mode)", st.StreamsAccepted)
			}
		})
	}
}

// TestWebsocketCut: running streams fail with a SessionEndedError and the
// next Dial works over a new session.
func TestWebsocketCut(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(t.Context(), c, 1000, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.CutWebsockets(); n != 1 {
		t.Fatalf("cut %d websockets, want 1", n)
	}
	_, err = io.ReadAll(c)
	var ended *ssm.SessionEndedError
	if !errors.As(err, &ended) || !strings.Contains(err.Error(), "websocket") {
		t.Fatalf("read on a cut session: %v, want a SessionEndedError naming the websocket", err)
	}
	c2, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatalf("dial after cut: %v", err)
	}
	defer c2.Close()
	if err := echoRoundTrip(t.Context(), c2, 1000, 2); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.SessionsStarted != 2 {
		t.Errorf("sessions started %d, want 2", st.SessionsStarted)
	}
}

// TestResumeAfterCut: when the service keeps the session across a lost
// websocket (as the real one does), the client resumes it with
// ResumeSession and streams carry on without noticing.
func TestResumeAfterCut(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{ResumeGrace: time.Minute,
		Faults: ssmendpoint.Faults{DropPercent: 1, Seed: 7}})
	tun := newTunnel(t, e, ssm.Config{Port: echo.port()})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- echoRoundTrip(t.Context(), c, 4<<20, 5) }()
	if n := e.CutWebsockets(); n != 1 { // lands somewhere in the transfer
		t.Fatalf("cut %d websockets", n)
	}
	if err := <-done; err != nil {
		t.Fatalf("transfer across a cut: %v", err)
	}
	e.CutWebsockets() // and once more while idle
	if err := echoRoundTrip(t.Context(), c, 100<<10, 6); err != nil {
		t.Fatalf("transfer after an idle cut: %v", err)
	}
	st, ts := e.Stats(), tun.Stats()
	if st.SessionsStarted != 1 || st.Reconnects < 2 || ts.Resumes < 2 {
		t.Errorf("endpoint %+v, client %+v: want 1 session resumed twice", st, ts)
	}
}

// TestCloseTerminates: Close sends the TerminateSession flag and calls the
// API, open streams fail, and no goroutine is left behind.
func TestCloseTerminates(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{})
	base := runtime.NumGoroutine()
	tun := newTunnel(t, e, ssm.Config{Port: echo.port(), Sessions: 2})
	var conns []io.ReadWriteCloser
	for i := range 4 {
		c, err := tun.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := echoRoundTrip(t.Context(), c, 1000, uint64(i)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conns[0].Write([]byte("x")); !errors.Is(err, ssm.ErrTunnelClosed) {
		t.Errorf("write after Close: %v, want ErrTunnelClosed", err)
	}
	if _, err := tun.Dial(t.Context()); !errors.Is(err, ssm.ErrTunnelClosed) {
		t.Errorf("dial after Close: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	st := e.Stats()
	if st.SessionsStarted != 2 || st.TerminatedByFlag+st.TerminatedByAPI != 2 || st.TerminateCalls != 2 {
		t.Errorf("stats %+v: want 2 sessions, both terminated, 2 TerminateSession calls", st)
	}
	waitGoroutines(t, base)
}

// waitGoroutines polls (bounded) until the goroutine count is back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}

// TestChannelClosedByService: the service ends the session (here: the
// endpoint shuts down); streams fail with its reason, and neither side
// leaves a goroutine behind.
func TestChannelClosedByService(t *testing.T) {
	echo := startEcho(t)
	base := runtime.NumGoroutine()
	e, err := ssmendpoint.Start(t.Context(), ssmendpoint.Config{Targets: []string{testTarget}})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := ssm.New(t.Context(), ssm.Config{API: ssmClient(e), Target: testTarget, Port: echo.port()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := echoRoundTrip(t.Context(), c, 1000, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(c)
	var ended *ssm.SessionEndedError
	if !errors.As(err, &ended) || !strings.Contains(err.Error(), "the service closed the channel: endpoint shutting down") {
		t.Errorf("read after channel_closed: %v", err)
	}
	c.Close()
	tun.Close()
	if v := e.Violations(); len(v) > 0 {
		t.Errorf("violations: %q", v)
	}
	waitGoroutines(t, base)
}
