package cli

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
)

// signals cancels a command's context on SIGINT or SIGTERM, except that
// SIGINT is left to a foreground child (psql) while one runs. A terminal's
// Ctrl-C reaches every process in its foreground group; psql answers it by
// cancelling the running query and carrying on, so rdsproxy must neither
// stop serving psql nor kill it, as `aws ssm start-session` and
// `tsh db connect` do not. SIGTERM still ends the command and its child.
//
// SIGHUP is taken from the start too, so that it never has its default
// action (the process dies on the spot): the server reloads on it
// (takeHangups), even on one that came while it started; every other
// command ends on it as on SIGTERM (hangupEnds), so closing the terminal
// of a connect ends its connections with a reason and its SSM sessions.
// A process started with SIGHUP ignored (nohup) keeps ignoring it, but
// for the server's reloads.
type signals struct {
	toChild atomic.Bool
	again   chan struct{}  // closed by a second SIGINT or SIGTERM
	ch      chan os.Signal // what the watch receives
	nohup   bool           // SIGHUP was ignored when the process started

	mu      sync.Mutex
	hangups chan os.Signal // the server's reloads, once it takes them
	ends    bool           // a SIGHUP ends the command (hangupEnds)
	hungUp  bool           // a SIGHUP came before the command chose
}

// watchSignals returns a context cancelled by SIGINT or SIGTERM and the
// signals that govern it; stop ends the watch.
func watchSignals(parent context.Context) (ctx context.Context, s *signals, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	s = &signals{again: make(chan struct{}), ch: make(chan os.Signal, 1), nohup: signal.Ignored(syscall.SIGHUP)}
	signal.Notify(s.ch, os.Interrupt, syscall.SIGTERM)
	if !s.nohup {
		signal.Notify(s.ch, syscall.SIGHUP)
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case sig := <-s.ch:
				if sig == os.Interrupt && s.toChild.Load() || sig == syscall.SIGHUP && !s.hangUp() {
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
		signal.Stop(s.ch)
		close(done)
		<-finished
		cancel()
	}
}

// hangUp takes a SIGHUP: it reports whether the SIGHUP ends the command;
// else it is the server's reload, now or once the server takes them.
func (s *signals) hangUp() (ends bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.hangups != nil:
		select {
		case s.hangups <- syscall.SIGHUP:
		default: // one reload is already due
		}
	case s.ends:
		return true
	default:
		s.hungUp = true
	}
	return false
}

// takeHangups makes each SIGHUP a reload, delivered on the channel,
// including one that came before. A nil *signals (no watch) never
// delivers one.
func (s *signals) takeHangups() <-chan os.Signal {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangups = make(chan os.Signal, 1)
	if s.nohup { // reloads all the same
		signal.Notify(s.ch, syscall.SIGHUP)
	}
	if s.hungUp {
		s.hangups <- syscall.SIGHUP
	}
	return s.hangups
}

// hangupEnds makes a SIGHUP end the command, as SIGTERM does, including
// one that came before.
func (s *signals) hangupEnds() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.ends = true
	early := s.hungUp
	s.mu.Unlock()
	if early {
		select {
		case s.ch <- syscall.SIGHUP:
		default: // a signal is waiting already, and ends the command too
		}
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
