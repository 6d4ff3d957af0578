package ssm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"
)

const (
	handshakeTimeout = 30 * time.Second // the agent itself gives up after 15 s
	terminateTimeout = 5 * time.Second
	// clientMinRTO: loss is repaired by fast retransmit; a timeout floor
	// above loopback jitter avoids resending what is merely queued.
	clientMinRTO = 20 * time.Millisecond
)

// sessionParams is what a session needs from the tunnel.
type sessionParams struct {
	api           SSMAPI
	dialer        *websocket.Dialer
	target, host  string
	port          int
	document      string
	clientID      string
	clientVersion string
	window        int
	giveUp        time.Duration
	maxPayload    int
	log           *slog.Logger
}

// session is one Session Manager session: one websocket, one data channel,
// one smux client (or one basic-mode connection at a time). Its single
// fatal-error cell is ch (Channel.Close / Done / Err).
type session struct {
	p         sessionParams
	id        string
	streamURL string
	log       *slog.Logger
	ws        *wsConn
	ch        *Channel
	pipe      *dataPipe
	hs        chan *Message // handshake payloads, from the read loop
	ready     atomic.Bool   // handshake complete: Output goes to pipe
	mode      agentMode
	mux       *smux.Session
	basic     chan struct{} // basic mode: the one connection slot

	connectErrors atomic.Int64 // ConnectToPortError flags received
	closing       atomic.Bool  // terminate was called: streams see ErrTunnelClosed
	probing       atomic.Bool  // a probe is being written
	resumes       atomic.Int64 // successful ResumeSession reconnects
	apiTerminated atomic.Bool
	ctx           context.Context // session lifetime, for writes and the API
	cancel        context.CancelFunc
	wg            sync.WaitGroup
}

// startSession runs StartSession, opens the data channel and completes the
// handshake. ctx bounds the start; life bounds the session.
func startSession(ctx, life context.Context, p sessionParams) (*session, error) {
	in := startSessionInput(p.target, p.host, p.document, p.port)
	out, err := p.api.StartSession(ctx, in)
	if err != nil {
		return nil, startSessionError(p.target, *in.DocumentName, err)
	}
	s := &session{p: p, id: aws.ToString(out.SessionId), streamURL: aws.ToString(out.StreamUrl), hs: make(chan *Message, 8)}
	s.log = p.log.With("ssm_session", s.id)
	s.ctx, s.cancel = context.WithCancel(life)
	s.ws, err = dialDataChannel(ctx, p.dialer, aws.ToString(out.StreamUrl), OpenDataChannel{
		TokenValue: aws.ToString(out.TokenValue), ClientID: p.clientID, ClientVersion: p.clientVersion})
	if err != nil {
		s.terminateAPI()
		s.cancel()
		return nil, fmt.Errorf("ssm session %s: %w", s.id, err)
	}
	s.ch = NewChannel(ChannelConfig{SendType: TypeInputStreamData, Window: p.window, GiveUp: p.giveUp, MinRTO: clientMinRTO,
		Write: s.ws.writeBinary, Deliver: s.deliver, Logger: s.log})
	s.pipe = newDataPipe(s.ctx, s.ch, p.maxPayload)
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.readLoop() }()
	go func() { defer s.wg.Done(); s.ch.Run(s.ctx) }()
	go func() { defer s.wg.Done(); s.watch() }()
	if err := s.handshake(ctx); err != nil {
		s.fail(err)
		s.wg.Wait()
		return nil, fmt.Errorf("ssm session %s on %s: %w", s.id, p.target, err)
	}
	s.log.Info("ssm session ready", "agent_mux", s.mode.mux) // the logger names the instance
	return s, nil
}

// readLoop decodes websocket messages and dispatches them until the
// websocket fails or the session ends.
func (s *session) readLoop() {
	for {
		kind, b, err := s.ws.conn().ReadMessage()
		if err != nil {
			err = s.ws.readFailure(err)
			if s.closing.Load() || s.ch.Err() != nil {
				s.fail(fmt.Errorf("lost the websocket to Session Manager: %w", err))
				return
			}
			if err := s.resume(err); err != nil {
				s.fail(err)
				return
			}
			continue
		}
		if kind == websocket.TextMessage {
			s.log.Warn("text frame from the service", "text", truncate(string(b), 200))
			continue
		}
		m, err := Decode(b)
		if err != nil {
			s.log.Debug("ignoring undecodable frame", "err", err)
			continue
		}
		handled, err := s.ch.Handle(m)
		switch {
		case err != nil:
			s.fail(err)
			return
		case handled:
		case m.MessageType == TypeChannelClosed:
			s.fail(channelClosed(m))
			return
		case m.MessageType == TypeStartPublication || m.MessageType == TypePausePublication:
			// Retransmission covers the gap (§7.6).
		default:
			s.log.Debug("ignoring message", "type", m.MessageType)
		}
	}
}

// channelClosedPayload is the channel_closed JSON (§6.4).
type channelClosedPayload struct {
	SessionID string `json:"SessionId"`
	Output    string `json:"Output"`
}

func channelClosed(m *Message) error {
	var p channelClosedPayload
	_ = json.Unmarshal(m.Payload, &p) // the reason is optional
	reason := "the service closed the channel (terminated, idle timeout or maximum duration)"
	if p.Output != "" {
		reason = "the service closed the channel: " + p.Output
	}
	return &closedByService{reason: reason}
}

type closedByService struct{ reason string }

func (e *closedByService) Error() string { return e.reason }

// deliver receives the agent's stream messages in sequence order.
func (s *session) deliver(m *Message) bool {
	switch m.PayloadType {
	case PayloadHandshakeRequest, PayloadHandshakeComplete, PayloadEncChallengeRequest:
		select {
		case s.hs <- m:
			return true
		default:
			return false
		}
	case PayloadOutput:
		if !s.ready.Load() {
			return false // not ready: the agent retransmits
		}
		return s.pipe.push(m.Payload)
	case PayloadFlag:
		if len(m.Payload) == 4 && m.Payload[3] == byte(FlagConnectToPortError) {
			s.connectErrors.Add(1)
			s.log.Warn("the agent could not connect to the destination port", "port", s.p.port, "host", s.p.host)
		}
		return true
	}
	s.log.Debug("ignoring payload", "payload_type", m.PayloadType)
	return true
}

// handshake answers the HandshakeRequest and waits for HandshakeComplete
// (§8). No data flows before it returns.
func (s *session) handshake(ctx context.Context) error {
	timer := time.NewTimer(handshakeTimeout)
	defer timer.Stop()
	var res handshakeResult
	gotRequest := false
	for {
		var m *Message
		select {
		case m = <-s.hs:
		case <-s.ch.Done():
			return s.handshakeEndedError(s.ch.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%w: no handshake from the agent within %s; port forwarding needs SSM agent 3.0.222.0 or later on the target",
				ErrHandshake, handshakeTimeout)
		}
		switch m.PayloadType {
		case PayloadHandshakeRequest:
			var err error
			if res, err = s.answer(ctx, m); err != nil {
				return err
			}
			gotRequest = true
		case PayloadEncChallengeRequest:
			return fmt.Errorf("%w: %s", ErrHandshake, errKMS)
		case PayloadHandshakeComplete:
			if !gotRequest {
				return fmt.Errorf("%w: HandshakeComplete before HandshakeRequest", ErrHandshake)
			}
			return s.complete(m, res)
		}
	}
}

func (s *session) handshakeEndedError(err error) error {
	var cbs *closedByService
	if errors.As(err, &cbs) {
		return fmt.Errorf("%w before the handshake finished; is the SSM agent on the target 3.0.222.0 or later? %w", ErrHandshake, err)
	}
	return err
}

func (s *session) answer(ctx context.Context, m *Message) (handshakeResult, error) {
	var req HandshakeRequest
	if err := json.Unmarshal(m.Payload, &req); err != nil {
		return handshakeResult{}, fmt.Errorf("%w: decode HandshakeRequest: %w", ErrHandshake, err)
	}
	resp, res, herr := answerHandshake(&req, s.p.clientVersion)
	payload, err := json.Marshal(resp)
	if err != nil {
		return res, fmt.Errorf("encode HandshakeResponse: %w", err)
	}
	if err := s.ch.Send(ctx, PayloadHandshakeResponse, payload); err != nil {
		return res, fmt.Errorf("send HandshakeResponse: %w", err)
	}
	return res, herr
}

func (s *session) complete(m *Message, res handshakeResult) error {
	var hc HandshakeComplete
	if err := json.Unmarshal(m.Payload, &hc); err != nil {
		return fmt.Errorf("%w: decode HandshakeComplete: %w", ErrHandshake, err)
	}
	if hc.CustomerMessage != "" {
		s.log.Info("message from Session Manager", "text", hc.CustomerMessage)
	}
	s.mode = res.mode
	if s.mode.reacks {
		s.ch.PeerReacksDuplicates()
	}
	if !s.mode.mux {
		s.log.Warn("old SSM agent: basic port forwarding, one connection at a time", "agent_version", res.agentVersion)
		s.basic = make(chan struct{}, 1)
		s.ready.Store(true)
		return nil
	}
	cfg := smux.DefaultConfig()
	cfg.Version = 1
	cfg.KeepAliveDisabled = s.mode.keepAliveDisabled
	mux, err := smux.Client(s.pipe, cfg)
	if err != nil {
		return fmt.Errorf("start smux: %w", err)
	}
	s.mux = mux
	s.ready.Store(true)
	return nil
}

// fail ends the session with err (the first error wins).
func (s *session) fail(err error) { s.ch.Close(err) }

// alive reports whether the session can still carry streams.
func (s *session) alive() bool {
	select {
	case <-s.ch.Done():
		return false
	default:
		return s.mux == nil || !s.mux.IsClosed()
	}
}

// endedError describes why the session ended, for streams and Dial.
func (s *session) endedError() error {
	err := s.ch.Err()
	if s.closing.Load() || errors.Is(err, ErrTunnelClosed) {
		return ErrTunnelClosed
	}
	return &SessionEndedError{SessionID: s.id, Err: err}
}

// watch owns shutdown: when the channel closes it closes smux, the pipe
// and the websocket, and terminates the session if it died on our side.
func (s *session) watch() {
	ping := time.NewTicker(wsPingInterval)
	defer ping.Stop()
	probe := time.NewTicker(probeEvery / 2) // NeedsProbe spaces the probes
	defer probe.Stop()
	for done := false; !done; {
		select {
		case <-ping.C:
			if err := s.ws.ping(); err != nil {
				s.log.Debug("websocket ping", "err", err) // the read loop handles a dead websocket
			}
		case <-probe.C:
			s.probe()
		case <-s.ch.Done():
			done = true
		}
	}
	err := s.ch.Err()
	s.pipe.closeWith(s.endedError())
	if s.mux != nil {
		s.mux.Close()
	}
	s.ws.close()
	var cbs *closedByService
	if !errors.As(err, &cbs) && !errors.Is(err, ErrTunnelClosed) {
		s.log.Warn("ssm session ended", "err", err)
		s.terminateAPI()
	}
	s.cancel()
}

// smuxNOP is an smux v1 NOP frame (version 1, cmd 3, length 0, stream 0):
// every smux receiver ignores it, so it is a harmless message for the agent
// to acknowledge.
var smuxNOP = []byte{1, 3, 0, 0, 0, 0, 0, 0}

// probe sends an smux NOP when the channel needs a newer message to learn
// whether resent ones arrived (Channel.NeedsProbe). The pipe writes it
// between two smux frames. Basic mode has no harmless bytes to send.
func (s *session) probe() {
	if !s.ready.Load() || s.mux == nil || !s.ch.NeedsProbe() || s.probing.Swap(true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.probing.Store(false)
		if _, err := s.pipe.Write(smuxNOP); err != nil {
			s.log.Debug("probe", "err", err)
		}
	}()
}

// terminate ends the session on purpose: TerminateSession flag in-band
// (when the agent understands it), TerminateSession API, then close.
func (s *session) terminate() {
	s.closing.Store(true)
	endedBefore := s.ch.Err()
	if endedBefore == nil && (s.mode.mux || s.mode.terminateFlag) {
		ctx, cancel := context.WithTimeout(s.ctx, time.Second)
		if err := s.ch.SendFlag(ctx, FlagTerminateSession); err != nil {
			s.log.Debug("send TerminateSession flag", "err", err)
		}
		cancel()
	}
	var cbs *closedByService
	if !errors.As(endedBefore, &cbs) { // else the service had already ended it
		s.terminateAPI()
	}
	s.fail(ErrTunnelClosed)
	s.wg.Wait()
}

func (s *session) terminateAPI() {
	if s.apiTerminated.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), terminateTimeout)
	defer cancel()
	if _, err := s.p.api.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: aws.String(s.id)}); err != nil {
		s.log.Warn("ssm TerminateSession failed", "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
