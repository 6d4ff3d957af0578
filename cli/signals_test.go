package cli

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// A SIGHUP is never the signal's default action (the process dying on
// the spot): one that comes before the command has chosen waits for it,
// then is the server's reload or ends any other command as SIGTERM does.
func TestHangups(t *testing.T) {
	for _, tc := range []struct {
		name        string
		early, late int  // SIGHUPs before and after the command chose
		server      bool // the command takes them as reloads
		wantReloads int
		wantEnded   bool
	}{
		{"server, early", 1, 0, true, 1, false},
		{"server, early and late coalesce", 2, 3, true, 1, false},
		{"server, late", 0, 1, true, 1, false},
		{"server, none", 0, 0, true, 0, false},
		{"connect, early", 1, 0, false, 0, true},
		{"connect, late", 0, 1, false, 0, true},
		{"connect, none", 0, 0, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, s, stop := watchSignals(context.Background())
			defer stop()
			hangUp := func(n int) {
				for range n {
					s.ch <- syscall.SIGHUP // as signal.Notify delivers it
					waitFor(t, func() bool { return len(s.ch) == 0 })
				}
			}
			hangUp(tc.early)
			waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.hungUp == (tc.early > 0) })
			var reloads <-chan os.Signal
			if tc.server {
				reloads = s.takeHangups()
			} else {
				s.hangupEnds()
			}
			hangUp(tc.late)
			if tc.wantEnded {
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("the command did not end on SIGHUP")
				}
			} else {
				time.Sleep(50 * time.Millisecond) // a wrongly ended command would be now
				if ctx.Err() != nil {
					t.Fatal("SIGHUP ended the server")
				}
			}
			if tc.wantReloads > 0 { // the watcher may not have passed the last one on yet
				waitFor(t, func() bool { return len(reloads) >= tc.wantReloads })
			}
			if got := len(reloads); got != tc.wantReloads {
				t.Errorf("%d reloads due, want %d", got, tc.wantReloads)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
