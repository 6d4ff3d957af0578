// Package ssmendpoint is the project's Session Manager double for tests,
// the demo and benchmarks: one HTTP server on 127.0.0.1 that plays both the
// SSM JSON 1.1 API (StartSession, TerminateSession, ResumeSession,
// DescribeInstanceInformation) and the
// service + agent end of the data channel (ssm-protocol.md §11).
//
// Data flow:
//
//	SDK ──POST / (X-Amz-Target)──► api: session record, ws:// StreamUrl, token
//	client ──GET StreamUrl (websocket)──► agent: OpenDataChannel check,
//	  read loop ─► validate (every client frame, §5) ─► fault injection ─►
//	  tunnel/ssm.Channel (acks, reordering, retransmission) ─► handshake /
//	  smux server (per stream: dial the destination, copy both ways) or basic
//	  mode (one destination connection, DisconnectToPort/redial)
//	agent output ─► Channel.Send ─► fault injection ─► websocket
//
// It behaves like the reference agent (version rules, not-ready window after
// HandshakeComplete, pacing option, channel_closed on termination) and
// records every protocol violation by the client so tests can assert none.
package ssmendpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures the endpoint. The zero value plus Targets is a fast,
// fault-free, current agent.
type Config struct {
	Logger *slog.Logger
	// Targets are the connected managed nodes; StartSession on any other
	// target fails with TargetNotConnected.
	Targets []string
	// DeniedTargets fail StartSession with AccessDeniedException.
	DeniedTargets []string
	// ConnectionLost are managed nodes whose agent stopped reporting:
	// DescribeInstanceInformation lists them with PingStatus ConnectionLost
	// and StartSession fails with TargetNotConnected.
	ConnectionLost []string
	// AgentVersion is reported in the HandshakeRequest and decides the
	// agent's behaviour (≤ 3.0.196.0: basic mode only). Default 3.3.987.0.
	AgentVersion string
	// NoPortPlugin makes StartSession fail as for an agent too old for port
	// forwarding (the service's exact error is an assumption).
	NoPortPlugin bool
	// RequestKMS adds a KMSEncryption action to the HandshakeRequest (real
	// agents never do for Port sessions).
	RequestKMS bool
	// Dest overrides the address the agent dials; empty: host:portNumber
	// from the StartSession parameters, host defaulting to localhost.
	Dest string
	// NotReady is how long after HandshakeComplete client data is left
	// unacknowledged (the real agent's port session start-up).
	NotReady time.Duration
	// Pacing reproduces the agent's 1024-byte reads and 1 ms sleep per
	// output message (throughput cap < ~1 MB/s per session).
	Pacing bool
	// Faults injects loss, duplication, reordering and ack delay.
	Faults Faults
	// ResumeGrace, when positive, keeps a session whose websocket dropped
	// alive this long for the client to ResumeSession and reconnect (the
	// service's behaviour); zero ends the session when the websocket drops.
	ResumeGrace time.Duration
	// HandshakeTimeout is how long the agent waits for the
	// HandshakeResponse. Default 15 s.
	HandshakeTimeout time.Duration
}

// Faults are applied to binary data-channel frames in both directions.
type Faults struct {
	DropPercent      float64
	DuplicatePercent float64
	ReorderPercent   float64
	AckDelay         time.Duration // the agent's acks leave this late
	Seed             uint64
}

// Stats are the endpoint's counters.
type Stats struct {
	SessionsStarted    int64
	TerminateCalls     int64 // TerminateSession API calls
	TerminatedByAPI    int64 // sessions ended by the API
	TerminatedByFlag   int64 // sessions ended by the TerminateSession flag
	ResumeCalls        int64
	ChannelsOpened     int64 // websockets that passed OpenDataChannel
	FramesReceived     int64 // binary frames from clients
	Violations         int64
	StreamsAccepted    int64
	DialFailures       int64
	DisconnectToPort   int64
	WebsocketsCut      int64
	Reconnects         int64    // websockets resumed after a drop
	ClientVersionsSeen []string // OpenDataChannel and "handshake:"-prefixed HandshakeResponse values
	Documents          []string // DocumentName of every successful StartSession
}

// Endpoint is a running SSM double.
type Endpoint struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener
	srv *http.Server

	mu         sync.Mutex
	sessions   map[string]*sessionRecord
	violations []string
	versions   []string
	documents  []string
	closed     bool

	wg    sync.WaitGroup // agents and their goroutines
	life  context.Context
	stop  context.CancelFunc
	stats struct {
		started, terminateCalls, byAPI, byFlag, resume, opened, frames, violations,
		streams, dialFailures, disconnects, cuts, reconnects atomic.Int64
	}
}

// sessionRecord is one StartSession.
type sessionRecord struct {
	id, token, target, host, port, document string
	agent                                   *agent // nil until the websocket opened
	terminated                              bool
}

// Start listens on 127.0.0.1:0 and serves until Close.
func Start(ctx context.Context, cfg Config) (*Endpoint, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = "3.3.987.0"
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 15 * time.Second
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ssm endpoint listen: %w", err)
	}
	e := &Endpoint{cfg: cfg, log: cfg.Logger, ln: ln, sessions: make(map[string]*sessionRecord)}
	e.life, e.stop = context.WithCancel(context.WithoutCancel(ctx))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", e.serveAPI)
	mux.HandleFunc("GET /v1/data-channel/{id}", e.serveDataChannel)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return e.life }}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("ssm endpoint serve", "err", err)
		}
	}()
	return e, nil
}

// URL is the API endpoint, for the SDK's BaseEndpoint or AWS_ENDPOINT_URL_SSM.
func (e *Endpoint) URL() string { return "http://" + e.ln.Addr().String() }

// Close ends every session and waits for all goroutines.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	var agents []*agent
	for _, r := range e.sessions {
		if r.agent != nil {
			agents = append(agents, r.agent)
		}
	}
	e.mu.Unlock()
	err := e.srv.Close() // hijacked websockets are ours to close
	for _, a := range agents {
		a.end(endReason{output: "endpoint shutting down"})
	}
	e.stop()
	e.wg.Wait()
	return err
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	s := &e.stats
	e.mu.Lock()
	versions, docs := slices.Clone(e.versions), slices.Clone(e.documents)
	e.mu.Unlock()
	return Stats{SessionsStarted: s.started.Load(), TerminateCalls: s.terminateCalls.Load(),
		TerminatedByAPI: s.byAPI.Load(), TerminatedByFlag: s.byFlag.Load(), ResumeCalls: s.resume.Load(),
		ChannelsOpened: s.opened.Load(), FramesReceived: s.frames.Load(), Violations: s.violations.Load(),
		StreamsAccepted: s.streams.Load(), DialFailures: s.dialFailures.Load(),
		DisconnectToPort: s.disconnects.Load(), WebsocketsCut: s.cuts.Load(), Reconnects: s.reconnects.Load(), ClientVersionsSeen: versions,
		Documents: docs}
}

// Violations returns every protocol violation seen in client frames.
func (e *Endpoint) Violations() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.violations)
}

// CutWebsockets closes every open data-channel websocket abruptly (no close
// frame, no channel_closed), like a network failure. It returns how many.
func (e *Endpoint) CutWebsockets() int {
	e.mu.Lock()
	var agents []*agent
	for _, r := range e.sessions {
		if r.agent != nil && !r.terminated {
			agents = append(agents, r.agent)
		}
	}
	e.mu.Unlock()
	n := 0
	for _, a := range agents {
		if a.cut() {
			n++
		}
	}
	e.stats.cuts.Add(int64(n))
	return n
}

func (e *Endpoint) violation(sessionID, format string, args ...any) {
	msg := sessionID + ": " + fmt.Sprintf(format, args...)
	e.stats.violations.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.violations) < 1000 {
		e.violations = append(e.violations, msg)
	}
	e.log.Error("ssm client protocol violation", "violation", msg)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
