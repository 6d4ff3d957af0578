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
)

// wsStallLimit is how long a write may wait for a client that does not
// read before its websocket counts as dead.
const wsStallLimit = 2 * time.Minute

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

	wmu       sync.Mutex      // guards ws, connected and online; serializes writes
	ws        *websocket.Conn // current websocket
	connected bool
	online    chan struct{}        // closed while the client is connected
	reconnect chan *websocket.Conn // a resumed websocket for the read loop

	st  *agentStream
	val *validator
	in  *inbox
	hs  chan *frame

	faultMu sync.Mutex
	rng     *rand.Rand
	heldOut []byte // reordered outgoing frame
	heldIn  []byte // reordered incoming frame
	ackWG   sync.WaitGroup

	handshakeDone atomic.Bool
	readyAt       atomic.Int64 // unix nanos: client data is taken from then on
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
	a := &agent{e: e, rec: rec, ws: ws, connected: true, online: make(chan struct{}), reconnect: make(chan *websocket.Conn, 1),
		openVersion: openVersion, log: e.log.With("session", rec.id, "side", "agent"), hs: make(chan *frame, 4),
		endCh: make(chan struct{}), rng: rand.New(rand.NewPCG(e.cfg.Faults.Seed, uint64(e.stats.started.Load())))}
	close(a.online)
	a.ctx, a.cancel = context.WithCancel(e.life)
	a.val = newValidator(a.violation)
	a.st = newAgentStream(e.cfg.AgentVersion, a.writeOut, a.deliver)
	if e.cfg.Unpaced {
		// Unpaced, the agent can run 10,000 messages ahead of a slow
		// client's acks, which the real one cannot; keeping everything
		// spares fast tests a loss the real agent would not suffer.
		a.st.keepAll = true
	}
	a.in = newInbox(!e.cfg.Unpaced)
	return a
}

// violation records a client protocol violation; in strict mode it also
// ends the session, so a test cannot pass over it.
func (a *agent) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	a.e.violation(a.rec.id, "%s", msg)
	if a.e.cfg.Strict {
		a.end(endReason{output: "protocol violation: " + msg})
	}
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

// awaitReconnect waits up to ResumeGrace for a resumed websocket. Meanwhile
// the agent is paused (§7.6): its pumps stop and nothing is resent.
func (a *agent) awaitReconnect() *websocket.Conn {
	if a.e.cfg.ResumeGrace <= 0 {
		return nil
	}
	a.wmu.Lock()
	if a.connected {
		a.online = make(chan struct{})
	}
	a.connected = false
	a.ws.Close()
	a.wmu.Unlock()
	a.st.setPaused(true)
	timer := time.NewTimer(a.e.cfg.ResumeGrace)
	defer timer.Stop()
	select {
	case ws := <-a.reconnect:
		a.wmu.Lock()
		a.ws, a.connected = ws, true
		close(a.online)
		a.wmu.Unlock()
		a.st.setPaused(false)
		a.e.stats.reconnects.Add(1)
		return ws
	case <-timer.C:
	case <-a.endCh:
	}
	return nil
}

// waitOnline blocks while the client is away (a paused agent reads nothing
// from its sockets).
func (a *agent) waitOnline() error {
	a.wmu.Lock()
	online := a.online
	a.wmu.Unlock()
	select {
	case <-online:
		return nil
	case <-a.endCh:
		return errors.New("session ended")
	}
}

// run serves the session until it ends, then cleans up.
func (a *agent) run() {
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.readLoop() }()
	go func() { defer a.wg.Done(); a.st.runResends(a.endCh) }()
	go func() { defer a.wg.Done(); a.serve() }()
	<-a.endCh
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

// readLoop reads client frames: validate, inject faults, then handle them.
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
			a.violation("text frame after OpenDataChannel: %q", b)
			continue
		}
		a.e.stats.frames.Add(1)
		a.val.check(b)
		for _, f := range a.faultIn(b) {
			a.handle(f)
		}
	}
}

func (a *agent) handle(b []byte) {
	f, err := decodeFrame(b)
	if err != nil {
		a.violation("undecodable frame: %v", err)
		return
	}
	switch f.typ {
	case typeAck:
		err = a.st.onAck(f)
	case typeInput:
		_ = a.st.onData(f) // a failed ack write is the read loop's to notice
	default:
		err = fmt.Errorf("unexpected message type %q from the client", f.typ)
	}
	if err != nil {
		a.violation("%v", err)
	}
}

// deliver receives the client's stream messages in order.
func (a *agent) deliver(f *frame) bool {
	switch f.ptype {
	case ptHandshakeResponse:
		if a.handshakeDone.Load() {
			a.violation("HandshakeResponse after HandshakeComplete")
			return true
		}
		select {
		case a.hs <- f:
			return true
		default:
			return false
		}
	case ptOutput, ptFlag:
		if !a.handshakeDone.Load() {
			// The real agent acks and discards it.
			a.violation("payload type %d (seq %d) before HandshakeComplete", f.ptype, f.seq)
			return true
		}
		if time.Now().UnixNano() < a.readyAt.Load() {
			return false // port session still starting: no ack
		}
		if f.ptype == ptFlag {
			a.flag(f)
			return true
		}
		a.in.push(item{data: f.payload})
		return true
	}
	a.violation("unexpected payload type %d", f.ptype)
	return true
}

func (a *agent) flag(f *frame) {
	if len(f.payload) != 4 {
		return // the validator reported it
	}
	switch v := binary.BigEndian.Uint32(f.payload); v {
	case flagTerminateSession:
		a.e.mu.Lock()
		first := !a.rec.terminated
		a.rec.terminated = true
		a.e.mu.Unlock()
		if first {
			a.e.stats.byFlag.Add(1)
		}
		a.end(endReason{output: "Session terminated by the client."})
	case flagDisconnectToPort:
		a.e.stats.disconnects.Add(1)
		if a.mode.mux {
			a.violation("DisconnectToPort flag in mux mode")
			return
		}
		a.in.push(item{flag: v})
	}
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
	}{id.String(), strconv.FormatInt(now.UnixMilli(), 10), a.rec.target, a.rec.id, typeClosed, 1, output})
	b, err := (&frame{typ: typeClosed, created: uint64(now.UnixMilli()), id: id, payload: payload}).encode()
	if err == nil {
		_ = a.writeWSWithin(b, time.Second)
	}
}

// writeWS writes one frame. A slow client holds the agent back (TCP
// backpressure) for as long as wsStallLimit before the websocket is
// dropped as dead.
func (a *agent) writeWS(b []byte) error { return a.writeWSWithin(b, wsStallLimit) }

func (a *agent) writeWSWithin(b []byte, limit time.Duration) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if !a.connected && a.e.cfg.ResumeGrace > 0 {
		return nil // client away: retransmission fills the gap
	}
	_ = a.ws.SetWriteDeadline(time.Now().Add(limit))
	err := a.ws.WriteMessage(websocket.BinaryMessage, b)
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
	if dest := a.e.nodeDest(a.rec.target); dest != "" {
		a.addrs = []string{dest}
		return nil
	}
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
