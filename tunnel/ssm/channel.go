package ssm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// ErrChannelClosed is returned by Send after the channel was closed.
var ErrChannelClosed = errors.New("data channel closed")

// DefaultWindow is 256 messages (256 KiB of Output): far more than one
// session's bandwidth-delay product (the agent moves < 1 MB/s), and small
// enough that a window queued in front of an agent taking in about 1 KiB
// per millisecond is acknowledged well within the 1 s maximum RTO; with
// 1024, messages timed out while merely queued and were sent again.
const DefaultWindow = 256

// ChannelConfig configures one end of the reliable stream layer
// (docs/ssm-protocol.md §7). The client sends input_stream_data and receives
// output_stream_data; the agent the reverse.
type ChannelConfig struct {
	// SendType is TypeInputStreamData (client) or TypeOutputStreamData (agent).
	SendType string
	// SYNOnFirst sets header Flags 1 on sequence number 0 (agent behaviour).
	SYNOnFirst bool
	// Window bounds the messages in flight: Send blocks while Window sent
	// messages are unacknowledged and not yet shown to have arrived. A
	// resent message whose resend reached the peer (a message sent after
	// it on the same websocket was acked) lost only its ack, as agents
	// before 3.2.1041.0 never re-ack duplicates: it stops holding up the
	// stream, and is resent until acked or presumed delivered. Default
	// DefaultWindow.
	Window int
	// ReorderLimit bounds early (out-of-order) messages kept. Default 8192.
	ReorderLimit int
	// ControlLimit bounds acknowledgements waiting for Run's writer; more
	// are dropped (the peer's retransmission recovers).
	// Default 8192.
	ControlLimit int
	// MinRTO raises the retransmission timeout's floor above the
	// reference's 10 ms granularity term; 0 keeps the reference behaviour.
	MinRTO time.Duration
	// GiveUp fails the channel when messages wait and no acknowledgement
	// at all arrived for this long (the peer is gone). Default 2 minutes.
	GiveUp time.Duration
	// Write sends one binary websocket message. It must be safe for
	// concurrent use and must not retain frame.
	Write func(frame []byte) error
	// Deliver receives the peer's stream messages in sequence order, once
	// each. It returns false when it cannot take the message now; the
	// message is then neither acknowledged nor consumed (the peer
	// retransmits it) unless it was already acknowledged as an early
	// message, in which case it is offered again after Redeliver.
	// Deliver runs on the goroutine that calls Handle or Redeliver and must
	// not call back into the Channel's receive side.
	Deliver func(m *Message) bool
	Logger  *slog.Logger

	// Test hooks; nil means uuid.New and time.Now.
	NewID func() uuid.UUID
	Now   func() time.Time
}

func (c *ChannelConfig) setDefaults() {
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.ReorderLimit <= 0 {
		c.ReorderLimit = 8192
	}
	if c.ControlLimit <= 0 {
		c.ControlLimit = 8192
	}
	if c.GiveUp <= 0 {
		c.GiveUp = 2 * time.Minute
	}
	if c.NewID == nil {
		c.NewID = uuid.New
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ChannelStats counts what a Channel did.
type ChannelStats struct {
	Sent, Resent, AcksReceived        int64
	Received, Duplicates, Early, Acks int64
	NotAccepted                       int64
	ControlDropped                    int64 // acks dropped: queue full
	Presumed                          int64 // never acked, presumed delivered (see presumeProofs)
	Swept                             int64 // acks sent again for a run of lost acks (see sweepLocked)
}

type outMsg struct {
	seq        int64
	frame      []byte
	firstSent  time.Time
	lastSent   time.Time
	resends    int
	laterAcked int  // acks for messages sent after this one's last send
	gen        int  // path (websocket) generation of the last send
	proofs     int  // resends shown to have arrived (see proveLocked)
	provenAt   int  // resends when the last proof was counted
	fast       bool // marked for a fast retransmit (fastRetransmitLocked)
}

// Channel is one end of the data channel's reliable stream: sequence
// numbers, acknowledgements, reordering, duplicate re-acks and
// retransmission. Run must be running for acknowledgements and
// retransmissions to be sent.
type Channel struct {
	cfg      ChannelConfig
	recvType string

	// sendMu serializes the stamping and writing of sequenced messages
	// (Send, resend) and path switches (NewPath), so sequence order is
	// write order and lastSent order is wire order: proveLocked relies on it.
	sendMu  sync.Mutex
	mu      sync.Mutex // guards the fields below
	nextSeq int64
	unacked map[int64]*outMsg
	resent  map[int64]*outMsg // the unacked messages that were resent
	oldest  int64             // lowest possibly unacked sequence number
	rtt     rttEstimator
	// inWindow counts unacked messages with no proof of arrival: the ones
	// the window holds.
	inWindow  int
	gen       int       // path generation, raised by NewPath
	pathDown  bool      // between PathDown and NewPath: no resends, no give-up
	progress  time.Time // last acknowledgement, or when messages began to wait
	lastFresh time.Time // last first-time send
	lastProbe time.Time

	recvMu   sync.Mutex
	expected int64
	early    map[int64]*Message
	// recentIDs holds the MessageIds of the last reackRing messages
	// delivered in order, at seq % reackRing; lastDup and sweptTo follow
	// the peer's walk through a run of lost acks (see sweepLocked).
	recentIDs []uuid.UUID
	lastDup   int64
	sweptTo   int64

	space   chan struct{} // a message was acknowledged
	drained chan struct{} // every sent message is acknowledged
	kick    chan struct{} // unacked went from empty to non-empty, a fast retransmit is due, or a new path
	ctrl    *controlQueue // acks, written by Run
	done    chan struct{}
	once    sync.Once
	err     error

	stats struct {
		sent, resent, acksReceived, received, dups, early, acks, notAccepted, controlDropped, presumed, swept atomic.Int64
	}
	// reacks: the peer re-acks duplicates, so a resend that arrives is
	// acked and no message is ever presumed delivered.
	reacks atomic.Bool
}

// PeerReacksDuplicates tells the channel that its peer acknowledges a
// duplicate it already processed (agents from 3.2.1041.0, docs/ssm-protocol.md
// §7.3). Proofs then only free the send window: a message still waits for
// its own ack, since a resend shown "arrived" by later acks may in fact
// have been lost (an ack is the only proof a current agent owes).
func (c *Channel) PeerReacksDuplicates() { c.reacks.Store(true) }

// NewChannel returns a channel; call Run to start retransmission.
func NewChannel(cfg ChannelConfig) *Channel {
	cfg.setDefaults()
	recv := TypeOutputStreamData
	if cfg.SendType == TypeOutputStreamData {
		recv = TypeInputStreamData
	}
	return &Channel{
		cfg:      cfg,
		recvType: recv,
		unacked:  make(map[int64]*outMsg),
		resent:   make(map[int64]*outMsg),
		rtt:      newRTTEstimator(cfg.MinRTO),
		early:    make(map[int64]*Message),
		lastDup:  -1,
		space:    make(chan struct{}, 1),
		drained:  make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		ctrl:     newControlQueue(cfg.ControlLimit),
		done:     make(chan struct{}),
	}
}

// Close stops the channel; pending and later Sends fail with err (or
// ErrChannelClosed). The first error wins.
func (c *Channel) Close(err error) {
	c.once.Do(func() {
		if err == nil {
			err = ErrChannelClosed
		}
		c.err = err
		close(c.done)
	})
}

// Done is closed when the channel is closed; Err then says why.
func (c *Channel) Done() <-chan struct{} { return c.done }

// Err returns the error the channel was closed with, or nil.
func (c *Channel) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Stats returns counters.
func (c *Channel) Stats() ChannelStats {
	s := &c.stats
	return ChannelStats{Sent: s.sent.Load(), Resent: s.resent.Load(), AcksReceived: s.acksReceived.Load(),
		Received: s.received.Load(), Duplicates: s.dups.Load(), Early: s.early.Load(), Acks: s.acks.Load(),
		NotAccepted: s.notAccepted.Load(), ControlDropped: s.controlDropped.Load(), Presumed: s.presumed.Load(),
		Swept: s.swept.Load()}
}

// Unacked returns the number of sent messages not yet acknowledged.
func (c *Channel) Unacked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.unacked)
}

// Send sends one sequenced stream message, blocking while the window is
// full. The payload must not be empty.
func (c *Channel) Send(ctx context.Context, payloadType uint32, payload []byte) error {
	if err := c.waitSpace(ctx); err != nil {
		return err
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	now := c.cfg.Now()
	c.mu.Lock()
	seq := c.nextSeq
	m := Message{MessageType: c.cfg.SendType, CreatedDate: uint64(now.UnixMilli()), SequenceNumber: seq,
		MessageID: c.cfg.NewID(), PayloadType: payloadType, Payload: payload}
	if seq == 0 && c.cfg.SYNOnFirst {
		m.Flags = HeaderFlagSYN
	}
	frame, err := m.Encode(make([]byte, 0, FrameOverhead+len(payload)))
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.nextSeq++
	wasEmpty := len(c.unacked) == 0
	if wasEmpty {
		c.progress = now
	}
	c.unacked[seq] = &outMsg{seq: seq, frame: frame, firstSent: now, lastSent: now, gen: c.gen}
	c.inWindow++
	c.lastFresh = now
	c.mu.Unlock()
	if wasEmpty {
		signal(c.kick)
	}
	c.stats.sent.Add(1)
	if err := c.cfg.Write(frame); err != nil {
		err = fmt.Errorf("send message %d: %w", seq, err)
		c.Close(err)
		return err
	}
	return nil
}

// waitSpace waits until the window has room (see fullLocked).
func (c *Channel) waitSpace(ctx context.Context) error {
	for {
		c.mu.Lock()
		full := c.fullLocked()
		c.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		default:
		}
		if !full {
			return nil
		}
		select {
		case <-c.space:
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxBeyondWindow bounds the messages a full window lets through to
// prove resends (fullLocked): one, and a few more in case their own acks
// are lost.
const maxBeyondWindow = 4

// fullLocked reports whether Send must wait. Against an agent before
// 3.2.1041.0 a window can be full of messages that all arrived and whose
// acks were all lost (a link that fails with a window of acks in flight):
// the agent ignores their resends, and only the ack of a message sent
// after a resend proves it (proveLocked), so such a window lets a Send
// through, up to maxBeyondWindow; a probe would wait behind the window
// too. A current agent re-acks resends, so its window is never exceeded.
func (c *Channel) fullLocked() bool {
	if c.inWindow < c.cfg.Window {
		return false
	}
	if c.reacks.Load() || c.inWindow >= c.cfg.Window+maxBeyondWindow {
		return true
	}
	for _, m := range c.resent {
		if m.proofs == 0 && c.awaitsProofLocked(m) { // it holds the window
			return false
		}
	}
	return true
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// SendFlag sends a Flag message (§6.3).
func (c *Channel) SendFlag(ctx context.Context, flag uint32) error {
	b := []byte{byte(flag >> 24), byte(flag >> 16), byte(flag >> 8), byte(flag)}
	return c.Send(ctx, PayloadFlag, b)
}

// Handle processes a decoded message if it belongs to the stream layer
// (acknowledge, or the peer's stream type) and reports whether it did.
// Handle keeps early messages, so m and its payload must not be reused.
func (c *Channel) Handle(m *Message) (bool, error) {
	switch m.MessageType {
	case TypeAcknowledge:
		return true, c.handleAck(m)
	case c.recvType:
		return true, c.handleStream(m)
	}
	return false, nil
}

// WaitAcked blocks until every sent message is acknowledged.
func (c *Channel) WaitAcked(ctx context.Context) error {
	for c.Unacked() > 0 {
		select {
		case <-c.drained:
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
