package ssm_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestAgentModesLostAcks runs the client against the agent-faithful
// endpoint as a current agent (re-acks duplicates) and as an agent older
// than 3.2.1041.0 (drops them silently, so a lost ack is never repaired),
// with 1% of the client's frames and of the agent's acks lost, two
// concurrent streams, and a websocket cut in the middle of the transfer
// followed by ResumeSession. Every byte arrives once (checksums), the
// messages whose acks were lost stop waiting (presumed delivered against
// the old agent), and the session outlives a give-up time far shorter than
// the transfer: a lost ack never ends a live session.
func TestAgentModesLostAcks(t *testing.T) {
	for _, tc := range []struct {
		name, version string
		old           bool
	}{{"current agent", ssmendpoint.CurrentAgentVersion, false}, {"old agent", ssmendpoint.OldAgentVersion, true}} {
		t.Run(tc.name, func(t *testing.T) {
			echo := startEcho(t)
			e := startEndpoint(t, ssmendpoint.Config{AgentVersion: tc.version, Strict: true, Unpaced: true,
				ResumeGrace: time.Minute, Faults: ssmendpoint.Faults{DropPercent: 1, Seed: 11}})
			// Shorter than presumeAge, how long a message whose ack an old
			// agent lost waits before it is presumed delivered.
			const giveUp = 6 * time.Second
			tun := newTunnel(t, e, ssm.Config{Port: echo.port(), GiveUp: giveUp})
			const streams, size = 2, 4 << 20
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			started := make(chan struct{}, streams)
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
					started <- struct{}{}
					if err := echoRoundTrip(t.Context(), c, size, uint64(100+i)); err != nil {
						errs <- fmt.Errorf("stream %d: %w", i, err)
					}
				}()
			}
			for range streams {
				<-started
			}
			if n := e.CutWebsockets(); n != 1 { // lands in the middle of the transfers
				t.Fatalf("cut %d websockets, want 1", n)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// Every message sent is acknowledged or presumed delivered; the
			// old agent leaves some acks lost for good.
			waitUntil(t, "no message waits for an ack", func() bool { return tun.Stats().Unacked == 0 })
			c, err := tun.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := echoRoundTrip(t.Context(), c, 64<<10, 7); err != nil {
				t.Fatalf("after the lost acks: %v", err)
			}
			st, cs := e.Stats(), tun.Stats()
			t.Logf("endpoint: %+v", st)
			t.Logf("client: %+v", cs)
			if st.SessionsStarted != 1 || cs.Resumes < 1 {
				t.Errorf("sessions %d, resumes %d: want one session, resumed", st.SessionsStarted, cs.Resumes)
			}
			if tc.old {
				if st.DuplicatesReacked != 0 || st.DuplicatesDropped == 0 || cs.Presumed == 0 {
					t.Errorf("old agent: %d re-acked, %d dropped, %d presumed: want 0, >0, >0", st.DuplicatesReacked, st.DuplicatesDropped, cs.Presumed)
				}
			} else if st.DuplicatesReacked == 0 || st.DuplicatesDropped != 0 || cs.Presumed != 0 {
				t.Errorf("current agent: %d re-acked, %d dropped, %d presumed: want >0, 0, 0", st.DuplicatesReacked, st.DuplicatesDropped, cs.Presumed)
			}
			if st.AgentUnbuffered != 0 {
				t.Errorf("%d agent messages went out unkept", st.AgentUnbuffered)
			}
		})
	}
}

// waitUntil polls cond (bounded: a hang guard, not a timing assertion).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		<-tick.C
	}
}

// TestOldAgentFullWindowOfLostAcks: a whole window of messages reaches an
// agent older than 3.2.1041.0 and every ack is lost, as when a link fails
// with a window's acks in flight. The agent drops the resends without an
// ack, so only a message sent after them can show they arrived; the
// stream goes on past a give-up time far shorter than the transfer, and
// every byte arrives once.
func TestOldAgentFullWindowOfLostAcks(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{AgentVersion: ssmendpoint.OldAgentVersion, Strict: true, Unpaced: true})
	const window = 16
	tun := newTunnel(t, e, ssm.Config{Port: echo.port(), Window: window, GiveUp: 4 * time.Second})
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(t.Context(), c, 64<<10, 1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the stream is idle", func() bool { return tun.Stats().Unacked == 0 })
	e.LoseAcks(window)
	if err := echoRoundTrip(t.Context(), c, 1<<20, 2); err != nil {
		t.Fatalf("after a window of lost acks: %v", err)
	}
	st, cs := e.Stats(), tun.Stats()
	t.Logf("endpoint: %+v", st)
	t.Logf("client: %+v", cs)
	if st.SessionsStarted != 1 || st.DuplicatesDropped == 0 {
		t.Errorf("sessions %d, duplicates dropped %d: want one session, and resends the agent dropped", st.SessionsStarted, st.DuplicatesDropped)
	}
}
