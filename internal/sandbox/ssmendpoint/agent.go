package ssmendpoint

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// endReason says how an agent session ends.
type endReason struct {
	output string // channel_closed Output; ignored when silent
	silent bool   // websocket lost: no channel_closed
}

// agent is the agent (and the service relay) for one session.
type agent struct {
	e   *Endpoint
	rec *sessionRecord
	log *slog.Logger

	wmu       sync.Mutex      // guards ws and connected; serializes writes
	ws        *websocket.Conn // current websocket
	connected bool
	reconnect chan *websocket.Conn // a resumed websocket for the read loop

	ch  *ssm.Channel
	val *validator
	in  *inbox
	hs  chan *ssm.Message

	faultMu sync.Mutex
	rng     *rand.Rand
	heldOut []byte // reordered outgoing frame
	heldIn  []byte // reordered incoming frame
	ackWG   sync.WaitGroup

	handshakeDone atomic.Bool
	readyAt       atomic.Int64 // unix nanos: client data is acked from then on
	mode          agentMode
	openVersion   string   // ClientVersion from OpenDataChannel
	addrs         []string // destination addresses, resolved at session start

	ctx     context.Context
	cancel  context.CancelFunc
	endOnce sync.Once
	endCh   chan struct{}
	reason  endReason
	wg      sync.WaitGroup
}

func newAgent(e *Endpoint, rec *sessionRecord, ws *websocket.Conn, openVersion string) *agent {
	a := &agent{e: e, rec: rec, ws: ws, connected: true, reconnect: make(chan *websocket.Conn, 1), openVersion: openVersion, log: e.log.With("session", rec.id, "side", "agent"), hs: make(chan *ssm.Message, 4),
		endCh: make(chan struct{}), rng: rand.New(rand.NewPCG(e.cfg.Faults.Seed, uint64(e.stats.started.Load())))}
	a.ctx, a.cancel = context.WithCancel(e.life)
	a.val = newValidator(func(format string, args ...any) { e.violation(rec.id, format, args...) })
	a.ch = ssm.NewChannel(ssm.ChannelConfig{SendType: ssm.TypeOutputStreamData, SYNOnFirst: true,
		Window: 4096, Write: a.writeOut, Deliver: a.deliver, Logger: a.log})
	a.in = newInbox(a.ch)
	return a
}

// end stops the session; the first reason wins. Safe from any goroutine.
func (a *agent) end(r endReason) {
	a.endOnce.Do(func() {
		a.reason = r
		close(a.endCh)
	})
}

// cut drops the websocket like a network failure. Without ResumeGrace the
// session ends; with it the agent waits for the client to resume.
func (a *agent) cut() bool {
	select {
	case <-a.endCh:
		return false
	default:
	}
	if a.e.cfg.ResumeGrace <= 0 {
		a.end(endReason{silent: true})
	}
	a.wmu.Lock()
	a.ws.UnderlyingConn().Close()
	a.wmu.Unlock()
	return true
}

// attach hands a resumed websocket to the agent. Like the service, it
// replaces a websocket the agent still believes connected.
func (a *agent) attach(ws *websocket.Conn) bool {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	select {
	case <-a.endCh:
		return false
	default:
	}
	select {
	case a.reconnect <- ws:
	default:
		return false
	}
	if a.connected {
		a.ws.Close() // the read loop fails over to ws
	}
	return true
}

// awaitReconnect waits up to ResumeGrace for a resumed websocket.
func (a *agent) awaitReconnect() *websocket.Conn {
	if a.e.cfg.ResumeGrace <= 0 {
		return nil
	}
	a.wmu.Lock()
	a.connected = false
	a.ws.Close()
	a.wmu.Unlock()
	timer := time.NewTimer(a.e.cfg.ResumeGrace)
	defer timer.Stop()
	select {
	case ws := <-a.reconnect:
		a.wmu.Lock()
		a.ws, a.connected = ws, true
		a.wmu.Unlock()
		a.e.stats.reconnects.Add(1)
		return ws
	case <-timer.C:
	case <-a.endCh:
	}
	return nil
}

// run serves the session until it ends, then cleans up.
func (a *agent) run() {
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.readLoop() }()
	go func() { defer a.wg.Done(); a.ch.Run(a.ctx) }()
	go func() { defer a.wg.Done(); a.serve() }()
	select {
	case <-a.endCh:
	case <-a.ch.Done():
		a.end(endReason{output: "data channel failed: " + a.ch.Err().Error()})
		<-a.endCh
	}
	a.shutdown()
}

func (a *agent) shutdown() {
	if !a.reason.silent {
		a.sendChannelClosed(a.reason.output)
		a.wmu.Lock()
		_ = a.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		a.wmu.Unlock()
	}
	a.ch.Close(errors.New("session ended"))
	a.cancel()
	a.in.close()
	a.wmu.Lock()
	a.connected = false // refuse further attaches
	a.ws.Close()
	a.wmu.Unlock()
	a.wg.Wait()
	select {
	case ws := <-a.reconnect:
		ws.Close()
	default:
	}
	a.ackWG.Wait()
	a.e.mu.Lock()
	a.rec.terminated = true
	a.e.mu.Unlock()
	a.log.Debug("agent session ended", "output", a.reason.output, "silent", a.reason.silent)
}

// readLoop reads client frames: validate, inject faults, then hand them to
// the channel.
func (a *agent) readLoop() {
	a.wmu.Lock()
	ws := a.ws
	a.wmu.Unlock()
	for {
		kind, b, err := ws.ReadMessage()
		if err != nil {
			if ws = a.awaitReconnect(); ws == nil {
				a.end(endReason{silent: true})
				return
			}
			continue
		}
		if kind != websocket.BinaryMessage {
			a.e.violation(a.rec.id, "text frame after OpenDataChannel: %q", b)
			continue
		}
		a.e.stats.frames.Add(1)
		a.val.check(b)
		for _, f := range a.faultIn(b) {
			a.handle(f)
		}
	}
}

func (a *agent) handle(frame []byte) {
	m, err := ssm.Decode(frame)
	if err != nil {
		a.e.violation(a.rec.id, "undecodable frame: %v", err)
		return
	}
	handled, err := a.ch.Handle(m)
	if err != nil && a.ch.Err() == nil { // else our own write failed
		a.e.violation(a.rec.id, "%v", err)
	}
	if !handled {
		a.e.violation(a.rec.id, "unexpected message type %q from the client", m.MessageType)
	}
}

// deliver receives the client's stream messages in order (agent side).
func (a *agent) deliver(m *ssm.Message) bool {
	switch m.PayloadType {
	case ssm.PayloadHandshakeResponse:
		if a.handshakeDone.Load() {
			a.e.violation(a.rec.id, "HandshakeResponse after HandshakeComplete")
			return true
		}
		select {
		case a.hs <- m:
			return true
		default:
			return false
		}
	case ssm.PayloadOutput, ssm.PayloadFlag:
		if !a.handshakeDone.Load() {
			// The real agent acks and discards it.
			a.e.violation(a.rec.id, "payload type %d (seq %d) before HandshakeComplete", m.PayloadType, m.SequenceNumber)
			return true
		}
		if time.Now().UnixNano() < a.readyAt.Load() {
			return false // port session still starting: no ack
		}
		if m.PayloadType == ssm.PayloadFlag {
			return a.flag(m)
		}
		return a.in.push(item{data: m.Payload})
	}
	a.e.violation(a.rec.id, "unexpected payload type %d", m.PayloadType)
	return true
}

func (a *agent) flag(m *ssm.Message) bool {
	if len(m.Payload) != 4 {
		return true // the validator reported it
	}
	switch f := binary.BigEndian.Uint32(m.Payload); f {
	case ssm.FlagTerminateSession:
		a.e.mu.Lock()
		first := !a.rec.terminated
		a.rec.terminated = true
		a.e.mu.Unlock()
		if first {
			a.e.stats.byFlag.Add(1)
		}
		a.end(endReason{output: "Session terminated by the client."})
	case ssm.FlagDisconnectToPort:
		a.e.stats.disconnects.Add(1)
		if a.mode.mux {
			a.e.violation(a.rec.id, "DisconnectToPort flag in mux mode")
			return true
		}
		return a.in.push(item{flag: f})
	}
	return true
}

// sendChannelClosed tells the client the session is over (§6.4).
func (a *agent) sendChannelClosed(output string) {
	now := time.Now()
	id := uuid.New()
	payload, _ := json.Marshal(struct {
		MessageID     string `json:"MessageId"`
		CreatedDate   string `json:"CreatedDate"`
		DestinationID string `json:"DestinationId"`
		SessionID     string `json:"SessionId"`
		MessageType   string `json:"MessageType"`
		SchemaVersion int    `json:"SchemaVersion"`
		Output        string `json:"Output"`
	}{id.String(), strconv.FormatInt(now.UnixMilli(), 10), a.rec.target, a.rec.id, ssm.TypeChannelClosed, 1, output})
	m := &ssm.Message{MessageType: ssm.TypeChannelClosed, CreatedDate: uint64(now.UnixMilli()), MessageID: id, Payload: payload}
	frame, err := m.Encode(nil)
	if err == nil {
		_ = a.writeWS(frame)
	}
}

func (a *agent) writeWS(frame []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if !a.connected && a.e.cfg.ResumeGrace > 0 {
		return nil // client away: retransmission fills the gap
	}
	_ = a.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := a.ws.WriteMessage(websocket.BinaryMessage, frame)
	if err != nil && a.e.cfg.ResumeGrace > 0 {
		a.ws.Close() // the read loop notices and waits for a resume
		return nil
	}
	return err
}

// serve runs the handshake, then the port session.
func (a *agent) serve() {
	if err := a.resolve(); err != nil {
		a.end(endReason{output: err.Error()})
		return
	}
	if err := a.handshake(); err != nil {
		a.log.Info("agent handshake failed", "err", err)
		a.end(endReason{output: err.Error()})
		return
	}
	if a.mode.mux {
		a.serveMux()
	} else {
		a.serveBasic()
	}
}

// resolve fixes the destination addresses for the whole session, as the
// agent does (DNS once, at session start).
func (a *agent) resolve() error {
	if a.e.cfg.Dest != "" {
		a.addrs = []string{a.e.cfg.Dest}
		return nil
	}
	host := a.rec.host
	if host == "" {
		host = "localhost"
	}
	ips, err := net.DefaultResolver.LookupHost(a.ctx, host)
	if err != nil {
		return fmt.Errorf("Unable to resolve %s: %v", host, err)
	}
	for _, ip := range ips {
		a.addrs = append(a.addrs, net.JoinHostPort(ip, a.rec.port))
	}
	return nil
}

// dial connects to the destination: each address in order, first success.
func (a *agent) dial() (net.Conn, error) {
	var errs []error
	d := net.Dialer{Timeout: 5 * time.Second}
	for _, addr := range a.addrs {
		c, err := d.DialContext(a.ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	a.e.stats.dialFailures.Add(1)
	return nil, errors.Join(errs...)
}
