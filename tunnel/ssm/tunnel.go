package ssm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// MaxSessions bounds Config.Sessions: each session is a websocket and a
// session on the node's agent.
const MaxSessions = 64

// Config configures a Tunnel.
type Config struct {
	// API starts and terminates sessions (an *ssm.Client).
	API SSMAPI
	// Target is the managed node: "i-…", "mi-…" or "ecs:<cluster>_<task>_<container>".
	Target string
	// Host, when set, selects AWS-StartPortForwardingSessionToRemoteHost:
	// the agent on Target dials Host:Port. Empty: the agent dials
	// localhost:Port on Target (AWS-StartPortForwardingSession).
	Host string
	// Port is the destination port (the rdsproxy server's port).
	Port int
	// Document, when set, is a custom Session document (sessionType Port,
	// LocalPortForwarding) that pins the destination port, like the one
	// terraform/modules/aws-server creates so that developers cannot forward
	// to other ports. StartSession then passes no portNumber: the document
	// decides, and Port should name the same port. Not with Host.
	Document string
	// Sessions spreads streams over this many sessions (the agent caps each
	// session below ~1 MB/s per direction), at most MaxSessions. Default 1.
	// New starts the first and the others in the background.
	Sessions int
	// Lane adds one more session, the lane, which only DialLane uses:
	// a striped connection opens its first stream there and keeps its
	// bulk on the others, so that small messages cross a session with
	// nothing queued ahead of them (the agent sends each session's bytes
	// in order, 1 KiB per millisecond). Dial spreads over the others.
	Lane bool
	// ClientVersion is sent to the agent; it must be > 1.2.331.0 so that
	// agents use smux with keep-alive off. Default DefaultClientVersion.
	ClientVersion string
	// Logger gets the tunnel's lines; the caller's attributes name the
	// instance (the CLI adds "instance").
	Logger *slog.Logger
	// Dialer dials the websocket. Default: gorilla's DefaultDialer
	// (proxy from the environment, 45 s handshake timeout).
	Dialer *websocket.Dialer
	// Window bounds unacknowledged messages per session. Default
	// DefaultWindow.
	Window int
	// GiveUp ends a session when messages wait and no acknowledgement at
	// all arrived for this long. A lost ack alone never counts: an agent
	// older than 3.2.1041.0 never repairs one, so such messages are
	// presumed delivered once later messages were acked. Default 2 minutes.
	GiveUp time.Duration
	// MaxPayload is the Output payload size. Default 1024, like the plugin
	// and the agent; raise it only after testing against the real service.
	MaxPayload int
	// SessionEnded, when set, is called from the tunnel's own goroutine
	// when a session ends on its own (not by Close): the instance may be
	// gone, so a tunnel.Pool looks for the server's instances again.
	SessionEnded func(err error)
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.API == nil {
		errs = append(errs, errors.New("ssm: API is required"))
	}
	if !strings.HasPrefix(c.Target, "i-") && !strings.HasPrefix(c.Target, "mi-") && !strings.HasPrefix(c.Target, "ecs:") {
		errs = append(errs, fmt.Errorf("ssm: target %q is not an instance id (i-…, mi-…) or an ECS target (ecs:…)", c.Target))
	}
	if c.Port <= 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("ssm: port %d out of range", c.Port))
	}
	if c.Document != "" && c.Host != "" {
		errs = append(errs, errors.New("ssm: a custom document pins the destination on the target; it cannot be combined with a remote host"))
	}
	if c.Document != "" && !IsDocumentName(c.Document) {
		errs = append(errs, fmt.Errorf("ssm: %q is not an SSM document name or ARN", c.Document))
	}
	if c.Sessions < 0 || c.Sessions > MaxSessions {
		errs = append(errs, fmt.Errorf("ssm: sessions %d out of range 1..%d", c.Sessions, MaxSessions))
	}
	if c.ClientVersion == "" {
		c.ClientVersion = DefaultClientVersion
	} else if !versionGreater(c.ClientVersion, minClientVersion) {
		errs = append(errs, fmt.Errorf("ssm: client version %q must be a 4-part version greater than %s, or agents fall back to basic mode or smux keep-alive",
			c.ClientVersion, minClientVersion))
	}
	if c.Sessions == 0 {
		c.Sessions = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dialer == nil {
		c.Dialer = websocket.DefaultDialer
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	return errors.Join(errs...)
}

// Tunnel implements tunnel.Tunnel over Session Manager sessions.
type Tunnel struct {
	p      sessionParams
	life   context.Context
	cancel context.CancelFunc
	ended  func(error)
	wg     sync.WaitGroup // SessionEnded watchers

	mu     sync.Mutex
	slots  []slot // with a lane, slot 0
	lane   bool
	next   int
	closed bool
}

var (
	_ tunnel.Tunnel     = (*Tunnel)(nil)
	_ tunnel.LaneDialer = (*Tunnel)(nil)
)

// slot holds one session, or the start in progress.
type slot struct {
	s        *session
	starting chan struct{} // closed when the start in progress ends
	startErr error
}

// New validates cfg and starts the first session, so that configuration
// and permission problems surface at once. Sessions outlive ctx; Close ends
// them.
func New(ctx context.Context, cfg Config) (*Tunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Tunnel{slots: make([]slot, cfg.Sessions), ended: cfg.SessionEnded}
	if cfg.Lane {
		t.slots, t.lane = make([]slot, cfg.Sessions+1), true
	}
	t.life, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	t.p = sessionParams{api: cfg.API, dialer: cfg.Dialer, target: cfg.Target, host: cfg.Host, port: cfg.Port, document: cfg.Document,
		clientID: uuid.NewString(), clientVersion: cfg.ClientVersion, window: cfg.Window, giveUp: cfg.GiveUp,
		maxPayload: cfg.MaxPayload, log: cfg.Logger}
	s, err := t.sessionAt(ctx, 0)
	if err != nil {
		t.cancel()
		return nil, err
	}
	if s.mux == nil && t.lane { // basic mode (§9.4): a connection per session and no striping, so no lane
		t.slots, t.lane = t.slots[:cfg.Sessions], false
	}
	for i := 1; i < len(t.slots); i++ { // the others in the background: a striped connection wants them all at once
		t.wg.Go(func() {
			if _, err := t.sessionAt(t.life, i); err != nil && t.life.Err() == nil {
				cfg.Logger.Debug("ssm: a further session could not start yet; the next stream over it tries again", "err", err)
			}
		})
	}
	return t, nil
}

// Dial opens a stream to Target's port over the next session in turn
// (never the lane), starting a new session when that one has ended.
func (t *Tunnel) Dial(ctx context.Context) (net.Conn, error) {
	i := t.bulkFirst() + t.turn()%t.bulkSlots()
	return t.dialSlot(ctx, i, 0)
}

// DialLane opens a stream over the lane (Config.Lane), or as Dial does
// when there is none (tunnel.LaneDialer). Its DialBeside(i) reaches the
// other sessions in turn, from a different one for each lane stream.
func (t *Tunnel) DialLane(ctx context.Context) (net.Conn, error) {
	if !t.lane {
		return t.Dial(ctx)
	}
	return t.dialSlot(ctx, 0, t.turn())
}

// turn returns the next turn of the round robin over the bulk slots.
func (t *Tunnel) turn() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	return t.next - 1
}

// bulkFirst is the first slot that carries bulk: 1 with a lane, else 0.
func (t *Tunnel) bulkFirst() int {
	if t.lane {
		return 1
	}
	return 0
}

// bulkSlots is the number of slots that carry bulk (all but the lane).
func (t *Tunnel) bulkSlots() int { return len(t.slots) - t.bulkFirst() }

// besideSlot is the slot of the i-th stream beside one over slot (i ≥ 1):
// the bulk slots in turn, never the lane. Beside a lane stream the turn
// starts at base, so that connections striped over fewer stripes than
// the tunnel has sessions still spread over all of them.
func (t *Tunnel) besideSlot(slot, base, i int) int {
	first, n := t.bulkFirst(), t.bulkSlots()
	if slot < first {
		return first + (base+i-1)%n
	}
	return first + (slot-first+i)%n
}

// dialSlot opens a stream over slot i's session; base is the turn its
// streams beside start from, when i is the lane.
func (t *Tunnel) dialSlot(ctx context.Context, i, base int) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		s, err := t.sessionAt(ctx, i)
		if err != nil {
			return nil, err
		}
		var c net.Conn
		if s.mux != nil {
			c, err = s.openStream(t, i, base)
		} else {
			c, err = s.dialBasic(ctx)
		}
		if err == nil || s.alive() || attempt > 0 || ctx.Err() != nil || errors.Is(err, ErrTunnelClosed) {
			return c, err
		}
		// The session died between the check and the open: one fresh try.
	}
}

// sessionAt returns slot i's live session, starting one if needed. One
// start runs at a time per slot; concurrent callers share its outcome.
func (t *Tunnel) sessionAt(ctx context.Context, i int) (*session, error) {
	t.mu.Lock()
	for {
		if t.closed {
			t.mu.Unlock()
			return nil, ErrTunnelClosed
		}
		sl := &t.slots[i]
		if sl.s != nil && sl.s.alive() {
			s := sl.s
			t.mu.Unlock()
			return s, nil
		}
		if sl.starting == nil {
			break
		}
		wait := sl.starting
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		t.mu.Lock()
		if sl.s == nil && sl.startErr != nil {
			err := sl.startErr
			t.mu.Unlock()
			return nil, err
		}
	}
	sl := &t.slots[i]
	old := sl.s
	sl.s, sl.starting, sl.startErr = nil, make(chan struct{}), nil
	t.mu.Unlock()
	if old != nil {
		old.wg.Wait() // its goroutines end on their own once it died
	}
	s, err := startSession(ctx, t.life, t.p)
	t.mu.Lock()
	if err == nil && t.closed {
		// Close ran meanwhile and could not see this session.
		t.mu.Unlock()
		s.terminate()
		s, err = nil, ErrTunnelClosed
		t.mu.Lock()
	}
	close(sl.starting)
	sl.starting, sl.s, sl.startErr = nil, s, err
	if s != nil && t.ended != nil {
		t.wg.Add(1) // under mu: Close has not begun to wait
		go t.watchEnd(s)
	}
	t.mu.Unlock()
	return s, err
}

// watchEnd reports a session that ends before the tunnel closes.
func (t *Tunnel) watchEnd(s *session) {
	defer t.wg.Done()
	select {
	case <-s.ch.Done():
	case <-t.life.Done():
		return
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if !closed {
		t.ended(s.endedError())
	}
}

// Close terminates every session (TerminateSession flag and API) and waits
// for their goroutines. Streams still open fail with ErrTunnelClosed.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	var live []*session
	var starting []chan struct{}
	for i := range t.slots {
		if t.slots[i].s != nil {
			live = append(live, t.slots[i].s)
		}
		if t.slots[i].starting != nil {
			starting = append(starting, t.slots[i].starting)
		}
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range live {
		wg.Add(1)
		go func() { defer wg.Done(); s.terminate() }()
	}
	wg.Wait()
	t.cancel()
	for _, ch := range starting {
		<-ch
	}
	t.wg.Wait()
	return nil
}

// Stats are counters over the tunnel's current sessions.
type Stats struct {
	Sessions int   // live sessions
	Resumes  int64 // websockets resumed (ResumeSession) on live sessions
	Unacked  int   // messages sent and neither acknowledged nor presumed delivered
	ChannelStats
}

// Stats sums the data-channel counters of the live sessions.
func (t *Tunnel) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st Stats
	for _, sl := range t.slots {
		if sl.s == nil || !sl.s.alive() {
			continue
		}
		st.Sessions++
		st.Resumes += sl.s.resumes.Load()
		st.Unacked += sl.s.ch.Unacked()
		cs := sl.s.ch.Stats()
		st.Sent += cs.Sent
		st.Resent += cs.Resent
		st.AcksReceived += cs.AcksReceived
		st.Received += cs.Received
		st.Duplicates += cs.Duplicates
		st.Early += cs.Early
		st.Acks += cs.Acks
		st.NotAccepted += cs.NotAccepted
		st.Presumed += cs.Presumed
	}
	return st
}
