package ssmendpoint_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// forward serves a local port whose connections are tunnel streams, as the
// plugin's local port is for its session.
func forward(t *testing.T, tun *ssm.Tunnel) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := tun.Dial(t.Context())
				if err != nil {
					t.Errorf("tunnel dial: %v", err)
					return
				}
				defer s.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(s, c)
					s.Close()
					close(done)
				}()
				_, _ = io.Copy(c, s)
				c.Close()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

func newMatrixTunnel(t *testing.T, e *ssmendpoint.Endpoint, giveUp time.Duration) *ssm.Tunnel {
	t.Helper()
	tun, err := ssm.New(t.Context(), ssm.Config{API: apiClient(e), Target: matrixTarget, Port: pg.Port,
		GiveUp: giveUp, Logger: warnings(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// warnings logs the tunnel's warnings to the test's log: when a session
// ends on the client's side (a give-up, say), the failure says why. Once
// the test is over (the tunnel closes in its cleanup), nothing is logged.
func warnings(t *testing.T) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testLog struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// TestClientMatrix: the project's client passes the plugin's matrix
// against the paced endpoint as a current agent and as an agent older than
// 3.2.1041.0, with 1% of its frames and of the agent's acks lost, and a
// give-up time far shorter than the run: a lost ack never ends the
// session. COPYs are 16 MB each way: the paced agent moves < 1 MB/s, and
// 50 MB each way in both modes, beside the plugin's matrix, doubled the
// package's time in make test for no case the smaller run misses (the
// unpaced 50 MB run is TestConcurrentStreamsLossy in tunnel/ssm). Close
// terminates the session (flag and API); a TerminateSession by API ends a
// session's streams with the service's reason.
func TestClientMatrix(t *testing.T) {
	t.Parallel()
	postgres(t)
	for _, tc := range []struct{ name, version string }{
		{"current agent", ssmendpoint.CurrentAgentVersion},
		{"old agent", ssmendpoint.OldAgentVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := matrixEndpoint(t, ssmendpoint.Config{AgentVersion: tc.version,
				Faults: ssmendpoint.Faults{DropPercent: 1, Seed: 3}})
			tun := newMatrixTunnel(t, e, 5*time.Second)
			runMatrix(t, e, matrixOptions{addr: forward(t, tun), copyMB: 16, cut: func() { e.CutWebsockets() }})
			st := e.Stats()
			t.Logf("endpoint: %+v", st)
			t.Logf("client: %+v", tun.Stats())
			if st.SessionsStarted != 1 || st.StreamsAccepted == 0 {
				t.Errorf("sessions %d streams %d: want every stream over one smux session", st.SessionsStarted, st.StreamsAccepted)
			}
			// A queue in front of the paced agent is not loss: the RTO
			// learns it (Karn's backoff) instead of resending every
			// message several times.
			if cs := tun.Stats(); cs.Resent >= cs.Sent {
				t.Errorf("the client resent %d messages for %d sent", cs.Resent, cs.Sent)
			}
			if err := tun.Close(); err != nil {
				t.Fatal(err)
			}
			// Close sends the flag and calls the API at once; with 1% of its
			// frames lost the flag may arrive after the API ended the
			// session, or not at all (TestCloseTerminates in tunnel/ssm
			// checks the flag on a clean link).
			waitStats(t, e, "the session terminated", func(s ssmendpoint.Stats) bool {
				return s.TerminatedByFlag+s.TerminatedByAPI == 1 && s.TerminateCalls == 1
			})
		})
	}
	t.Run("terminated by API", func(t *testing.T) {
		e := matrixEndpoint(t, ssmendpoint.Config{})
		tun := newMatrixTunnel(t, e, 0)
		c, err := tun.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ids := e.LiveSessions()
		if len(ids) != 1 {
			t.Fatalf("live sessions %q, want one", ids)
		}
		if _, err := apiClient(e).TerminateSession(t.Context(), &awsssm.TerminateSessionInput{SessionId: aws.String(ids[0])}); err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(c)
		var ended *ssm.SessionEndedError
		if !errors.As(err, &ended) || !strings.Contains(err.Error(), "Session terminated by TerminateSession.") {
			t.Fatalf("read after TerminateSession: %v, want a SessionEndedError with the service's reason", err)
		}
		if st := e.Stats(); st.TerminatedByAPI != 1 {
			t.Errorf("stats %+v: want the session ended by the API", st)
		}
	})
}

// waitStats polls the endpoint's counters (a hang guard, not a timing
// assertion).
func waitStats(t *testing.T, e *ssmendpoint.Endpoint, what string, cond func(ssmendpoint.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond(e.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s: %+v", what, e.Stats())
		}
		<-tick.C
	}
}
