// Package ssmendpoint is the project's Session Manager double for tests,
// the demo and benchmarks: one HTTP server on 127.0.0.1 that plays both the
// SSM JSON 1.1 API (StartSession, TerminateSession, ResumeSession,
// DescribeInstanceInformation) and the
// service + agent end of the data channel (docs/ssm-protocol.md §11).
//
// Data flow:
//
//	SDK ──POST / (X-Amz-Target)──► api: session record, ws:// StreamUrl, token
//	SDK ──(SigV4 verified with the sandbox credentials; StartSession
//	  parameters checked against the port documents)
//	client ──GET StreamUrl (websocket)──► agent: OpenDataChannel check,
//	  read loop ─► validate (every client frame, §5) ─► fault injection ─►
//	  agentStream (the agent's acks, reordering, duplicate rule) ─► handshake
//	  (the document's properties) / smux server (per stream: dial the
//	  destination, copy both ways) or basic mode (one destination
//	  connection, DisconnectToPort/redial)
//	agent output ─► 1 KiB pump, 1 ms sleep ─► agentStream.send (kept for the
//	  oldest-only resend every 100 ms) ─► fault injection ─► websocket
//
// The agent side is its own implementation of the reference agent's
// behaviour (agent/session/datachannel and the port plugin), sharing no
// code with the client in tunnel/ssm: no send window, no give-up, oldest-
// only retransmission, duplicate re-acks only from agents since 3.2.1041.0,
// the not-ready window after HandshakeComplete, the agent's pacing, and
// channel_closed on termination. It records every protocol violation by the
// client; in strict mode a violation also ends the session.
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
	// target fails with TargetNotConnected. AddTarget and DisconnectTarget
	// change them while the endpoint runs.
	Targets []string
	// DeniedTargets fail StartSession with AccessDeniedException.
	DeniedTargets []string
	// ConnectionLost are managed nodes whose agent stopped reporting:
	// DescribeInstanceInformation lists them with PingStatus ConnectionLost
	// and StartSession fails with TargetNotConnected.
	ConnectionLost []string
	// AgentVersion is reported in the HandshakeRequest and decides the
	// agent's behaviour: ≤ 3.0.196.0 basic mode only; below 3.2.1041.0
	// duplicates are dropped without a re-ack (OldAgentVersion). Default
	// CurrentAgentVersion.
	AgentVersion string
	// Credentials are the access key ids and secret keys whose SigV4
	// signatures the API accepts. Default: the sandbox pair
	// (DefaultAccessKeyID, DefaultSecretAccessKey).
	Credentials map[string]string
	// Strict ends a session at the client's first protocol violation
	// (channel_closed says which) and refuses a doubtful OpenDataChannel;
	// tests turn it on. Off, violations are only recorded.
	Strict bool
	// NoPortPlugin makes StartSession fail as for an agent too old for port
	// forwarding (the service's exact error is an assumption).
	NoPortPlugin bool
	// RequestKMS adds a KMSEncryption action to the HandshakeRequest (real
	// agents never do for Port sessions).
	RequestKMS bool
	// PinnedDocuments are custom Session documents (name → the port they
	// pin), shaped like the Terraform module's: only localPortNumber may be
	// passed.
	PinnedDocuments map[string]int
	// Dest overrides the address the agent dials; empty: host:portNumber
	// from the StartSession parameters, host defaulting to localhost.
	Dest string
	// NotReady is how long after HandshakeComplete client data is left
	// unacknowledged (the real agent's port session start-up).
	NotReady time.Duration
	// Unpaced turns off the agent's pumps' pacing (1 KiB reads, 1 ms sleep
	// per read, both directions: < ~1 MB/s per session each way), for fast
	// unit tests; the agent then also keeps every unacknowledged message
	// (an unpaced agent outruns a slow client's acks by far more than its
	// 10,000-message buffer). Throughput figures must never be taken
	// unpaced.
	Unpaced bool
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

// Faults are applied to binary data-channel frames. DropPercent drops the
// client's frames and the agent's acks, never the agent's data: the agent
// repairs loss at one message per 100 ms, and a real websocket does not
// lose single messages (a cut, CutWebsockets, loses what is in flight).
// Duplication and reordering apply both ways.
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
	BadSignatures      int64    // API requests refused for their SigV4 signature
	AgentSent          int64    // agent stream messages sent (first time)
	AgentResent        int64    // agent retransmissions (oldest-only, per 100 ms tick)
	AgentUnbuffered    int64    // sent past the 10,000-message buffer: never resent
	AcksReceived       int64    // client acks that released an agent message
	DuplicatesReacked  int64    // client duplicates re-acked (agents since 3.2.1041.0)
	DuplicatesDropped  int64    // client duplicates dropped silently (older agents)
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
	nodes      []*node // managed nodes, in the order DescribeInstanceInformation lists them
	sessions   map[string]*sessionRecord
	violations []string
	versions   []string
	documents  []string
	closed     bool

	wg         sync.WaitGroup // agents and their goroutines
	life       context.Context
	stop       context.CancelFunc
	acksToLose atomic.Int64 // LoseAcks
	stats      struct {
		started, terminateCalls, byAPI, byFlag, resume, opened, frames, violations,
		streams, dialFailures, disconnects, cuts, reconnects, badSignatures atomic.Int64
	}
}

// Agent versions for the two duplicate rules (§7.3).
const (
	CurrentAgentVersion = "3.3.987.0" // re-acks duplicates
	OldAgentVersion     = "3.2.923.0" // below 3.2.1041.0: drops duplicates silently
)

// sessionRecord is one StartSession.
type sessionRecord struct {
	id, token, target, host, port, document string
	properties                              map[string]string // the document's, substituted
	agent                                   *agent            // nil until the websocket opened
	terminated                              bool
}

// Start listens on 127.0.0.1:0 and serves until Close.
func Start(ctx context.Context, cfg Config) (*Endpoint, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = CurrentAgentVersion
	}
	if len(cfg.Credentials) == 0 {
		cfg.Credentials = map[string]string{DefaultAccessKeyID: DefaultSecretAccessKey}
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 15 * time.Second
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ssm endpoint listen: %w", err)
	}
	e := &Endpoint{cfg: cfg, log: cfg.Logger, ln: ln, sessions: make(map[string]*sessionRecord)}
	e.initNodes()
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
	var agg streamStats
	for _, r := range e.sessions {
		if r.agent != nil {
			st := r.agent.st.stats()
			agg.sent += st.sent
			agg.resent += st.resent
			agg.unbuffered += st.unbuffered
			agg.acked += st.acked
			agg.reacked += st.reacked
			agg.dupsDropped += st.dupsDropped
		}
	}
	e.mu.Unlock()
	return Stats{BadSignatures: s.badSignatures.Load(), AgentSent: agg.sent, AgentResent: agg.resent,
		AgentUnbuffered: agg.unbuffered, AcksReceived: agg.acked, DuplicatesReacked: agg.reacked, DuplicatesDropped: agg.dupsDropped,
		SessionsStarted: s.started.Load(), TerminateCalls: s.terminateCalls.Load(),
		TerminatedByAPI: s.byAPI.Load(), TerminatedByFlag: s.byFlag.Load(), ResumeCalls: s.resume.Load(),
		ChannelsOpened: s.opened.Load(), FramesReceived: s.frames.Load(), Violations: s.violations.Load(),
		StreamsAccepted: s.streams.Load(), DialFailures: s.dialFailures.Load(),
		DisconnectToPort: s.disconnects.Load(), WebsocketsCut: s.cuts.Load(), Reconnects: s.reconnects.Load(), ClientVersionsSeen: versions,
		Documents: docs}
}

// LiveSessions returns the ids of the sessions not terminated.
func (e *Endpoint) LiveSessions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id, r := range e.sessions {
		if !r.terminated {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
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

// LoseAcks loses the agents' next n acknowledgements of client messages,
// as a link that fails loses the acks in flight while the messages they
// acknowledge have arrived.
func (e *Endpoint) LoseAcks(n int) { e.acksToLose.Add(int64(n)) }

// loseAck reports whether to lose this acknowledgement (LoseAcks).
func (e *Endpoint) loseAck() bool {
	for {
		n := e.acksToLose.Load()
		if n <= 0 {
			return false
		}
		if e.acksToLose.CompareAndSwap(n, n-1) {
			return true
		}
	}
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
