package cli

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// signals cancels a command's context on SIGINT or SIGTERM, except that
// SIGINT is left to a foreground child (psql) while one runs. A terminal's
// Ctrl-C reaches every process in its foreground group; psql answers it by
// cancelling the running query and carrying on, so rdsproxy must neither
// stop serving psql nor kill it, as `aws ssm start-session` and
// `tsh db connect` do not. SIGTERM still ends the command and its child.
type signals struct {
	toChild atomic.Bool
	again   chan struct{} // closed by a second SIGINT or SIGTERM
}

// watchSignals returns a context cancelled by SIGINT or SIGTERM and the
// signals that govern it; stop ends the watch.
func watchSignals(parent context.Context) (ctx context.Context, s *signals, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	s = &signals{again: make(chan struct{})}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case sig := <-ch:
				if sig == os.Interrupt && s.toChild.Load() {
					continue
				}
				if ctx.Err() != nil && !s.repeated() {
					close(s.again)
				}
				cancel()
			case <-done:
				return
			}
		}
	}()
	return ctx, s, func() {
		signal.Stop(ch)
		close(done)
		<-finished
		cancel()
	}
}

// Again is closed when a second SIGINT or SIGTERM has come: the server
// then ends its drain at once. A nil *signals (no watch) never closes it.
func (s *signals) Again() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.again
}

// repeated reports whether Again is closed; only the watch goroutine
// closes it.
func (s *signals) repeated() bool {
	select {
	case <-s.again:
		return true
	default:
		return false
	}
}

// leaveInterruptToChild makes SIGINT a no-op for rdsproxy until the
// returned func is called. A nil *signals (no watch) does nothing.
func (s *signals) leaveInterruptToChild() (restore func()) {
	if s == nil {
		return func() {}
	}
	s.toChild.Store(true)
	return func() { s.toChild.Store(false) }
}
