package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// stderrLine is stderr shared by log lines and the progress indicator: a
// log line first erases the indicator's frame, which the next tick
// redraws, so the two never tangle on one line.
type stderrLine struct {
	mu    sync.Mutex
	w     io.Writer
	drawn bool // an indicator frame is on the current line
}

const eraseLine = "\r\033[K"

// Write writes a log line, erasing the indicator first.
func (s *stderrLine) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eraseLocked()
	return s.w.Write(p)
}

func (s *stderrLine) draw(frame string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprint(s.w, eraseLine+frame)
	s.drawn = true
}

func (s *stderrLine) erase() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eraseLocked()
}

func (s *stderrLine) eraseLocked() {
	if s.drawn {
		io.WriteString(s.w, eraseLine)
		s.drawn = false
	}
}

// spinner draws a progress indicator on stderr while the caller waits, if
// stderr is a terminal and enabled; the returned func erases it.
func spinner(env Env, what string, enabled bool) func() {
	if !enabled || env.stderr == nil || !isTerminal(env.Stderr) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		frames := `|/-\`
		t := time.NewTicker(120 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			env.stderr.draw(fmt.Sprintf("%c %s…", frames[i%len(frames)], what))
			select {
			case <-done:
				env.stderr.erase()
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// isTerminal reports whether r (or a writer) is an interactive terminal.
func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// logLevels are --log-level's values.
var logLevels = []string{"debug", "info", "warn", "error"}

// logLevel is the level the logs are written at: --log-level if given
// (capped at warn by --quiet); else warn with --quiet, info with
// --verbose; else warn for a client on a terminal, where the command's
// own output says what matters, and info otherwise (the server, scripts,
// log collectors).
func (g *Globals) logLevel(command string, terminal bool) string {
	switch {
	case g.LogLevel != "" && g.Quiet && (g.LogLevel == "debug" || g.LogLevel == "info"):
		return "warn"
	case g.LogLevel != "":
		return g.LogLevel
	case g.Quiet:
		return "warn"
	case g.Verbose:
		return "info"
	case terminal && command != "server":
		return "warn"
	}
	return "info"
}
