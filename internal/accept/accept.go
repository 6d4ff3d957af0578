// Package accept is the accept loop of the client's local listeners and
// the server: it hands every connection to its owner and outlives
// running out of file descriptors or memory by pausing, instead of
// ending the listener.
//
// docs/architecture.md §4 and §5 show the client and the server running it.
package accept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// Serve accepts connections on ln and passes each to handle, which owns
// it from then on and must not block for long (it starts the
// connection's goroutine). Serve closes ln when ctx ends and then returns
// nil. After a temporary error (a net.Error, or EMFILE, ENFILE, ENOBUFS,
// ENOMEM, ECONNABORTED) it pauses, from 5ms doubling to 1s, and logs at
// most once a second; any other error ends it.
func Serve(ctx context.Context, ln net.Listener, log *slog.Logger, handle func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	b := backoff{log: log, logs: rate.Sometimes{Interval: time.Second}}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if b.wait(ctx, err) {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		b.delay = 0
		handle(c)
	}
}

// backoff paces accepting after temporary errors.
type backoff struct {
	log   *slog.Logger
	delay time.Duration
	logs  rate.Sometimes
}

// wait sleeps after a temporary error and reports whether to go on.
func (b *backoff) wait(ctx context.Context, err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) && !isResourceError(err) {
		return false
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	b.logs.Do(func() { b.log.Error("accept failed; backing off", "err", err, "delay", b.delay.String()) })
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isResourceError reports errors that clear up when descriptors or memory
// free up, so accepting should pause rather than stop.
func isResourceError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}
