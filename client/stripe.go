package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/stripe"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// joinTimeout bounds opening one further stripe, its TLS and the server's
// answer; the server refuses joins after its own window anyway.
const joinTimeout = 10 * time.Second

// offer is the striped transport to offer on a new stream to the server:
// one stripe per session of the stream's tunnel (tunnel.Spreader), zstd.
// Nil when striping is off, or for a passthrough target (the server keeps
// those raw).
func (p *Proxy) offer(stream net.Conn) *contract.Transport {
	if !p.cfg.Striping || p.cfg.Target.Auth != contract.AuthIAM {
		return nil
	}
	k, lane := 1, false
	if sp, ok := spreader(stream); ok {
		k, lane = min(max(sp.Sessions(), 1), contract.MaxTransportStripes), sp.Lane()
	}
	t := &contract.Transport{Version: contract.TransportVersion, Stripes: k, Compress: "zstd", Lane: lane}
	if p.cfg.NoCompression {
		t.Compress = ""
	}
	return t
}

// spreader is the tunnel.Spreader under stream (a TLS stream's own).
func spreader(stream net.Conn) (tunnel.Spreader, bool) {
	if tc, ok := stream.(*tls.Conn); ok {
		stream = tc.NetConn()
	}
	sp, ok := stream.(tunnel.Spreader)
	return sp, ok
}

// transportTaken reads a server's answer to the transport offer: ok when m
// is that answer, an error when the answer cannot be used.
func transportTaken(m pgwire.Message) (taken *contract.Transport, ok bool, err error) {
	name, value, isStatus := pgwire.ParameterStatus(m)
	if !isStatus || name != contract.TransportParam {
		return nil, false, nil
	}
	t, err := contract.ParseTransport(value)
	if err != nil || t.Version != contract.TransportVersion || t.ID == "" {
		return nil, true, pgwire.Errorf(pgwire.CodeProtocolViolation, contract.ReasonProtocol,
			"rdsproxy: the server answered the transport offer with %q, which this client cannot use", value).
			WithHint("Upgrade rdsproxy, or connect with --no-ssm-striping.")
	}
	return &t, true, nil
}

// stripe turns stream into the striped connection the server took and
// starts joining its further stripes, over the tunnel's other sessions.
// The connection carries data at once, over the stripes it has so far; a
// stripe that cannot join is left out.
func (p *Proxy) stripe(ctx context.Context, stream net.Conn, t, offer contract.Transport) (net.Conn, *joining) {
	t.Stripes = min(t.Stripes, offer.Stripes)                // never more than offered
	compress := t.Compress == "zstd" && offer.Compress != "" // nor compression the user turned off
	stream.SetDeadline(time.Time{})                          // the striped connection keeps its own deadlines; the stripes have none
	t.Lane = t.Lane && offer.Lane && t.Stripes > 1           // an old server does not echo it
	if offer.Lane && !t.Lane {
		p.laneOff(fmt.Sprintf("the server took %d stripes without the lane (it is older than the lane, or runs with --max-stripes 1)", t.Stripes))
	}
	sc := stripe.New(stream, stripe.Options{Codec: p.codec, Compress: compress, MaxStripes: t.Stripes, Lane: t.Lane})
	p.log.Debug("striped transport", "mode", contract.Transport{Version: t.Version, Stripes: t.Stripes, Compress: t.Compress, Lane: t.Lane}.String())
	sp, ok := spreader(stream)
	if !ok || t.Stripes == 1 {
		return sc, nil
	}
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	j := &joining{cancel: cancel}
	for i := 1; i < t.Stripes; i++ {
		j.wg.Go(func() {
			if err := p.join(ctx, sp, i, t.ID, sc); err != nil {
				p.log.Debug("a stripe could not join; the connection goes on without it", "stripe", i, "err", err)
			}
		})
	}
	return sc, j
}

// join opens stripe i beside the first and adds it to sc.
func (p *Proxy) join(ctx context.Context, sp tunnel.Spreader, i int, id string, sc *stripe.Conn) error {
	c, err := sp.DialBeside(ctx, i)
	if err != nil {
		return err
	}
	if p.cfg.ServerTLS != nil {
		if c, err = upgradeServer(ctx, c, p.cfg.ServerTLS); err != nil {
			return err
		}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()); close(fired) })
	defer stop()
	msg := pgwire.AppendStartup(nil, pgwire.Protocol30, pgwire.Params{{Key: contract.JoinParam, Value: id}})
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return fmt.Errorf("send join: %w", err)
	}
	m, err := pgwire.ReadMessage(c, nil, maxServerReply)
	if err != nil {
		c.Close()
		return fmt.Errorf("read join answer: %w", err)
	}
	if name, _, ok := pgwire.ParameterStatus(m); !ok || name != contract.JoinParam {
		c.Close()
		return fmt.Errorf("join refused: %s", describe(m))
	}
	// The server holds the stripe now and may send on it: it joins, late
	// or not, or the connection would lose what the server sends there.
	if !stop() {
		<-fired
	}
	c.SetDeadline(time.Time{})
	if err := sc.Add(c); err != nil {
		c.Close()
		return err
	}
	return nil
}

// describe names a server message for a log line: an ErrorResponse's
// SQLSTATE and reason.
func describe(m pgwire.Message) string {
	if code, reason := pgwire.Refusal(m); code != "" {
		return fmt.Sprintf("SQLSTATE %s (%s)", code, reason)
	}
	return fmt.Sprintf("message type %q", m.Type)
}

// joining is the further stripes of one connection being joined.
type joining struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// stop ends the joins still running and waits for them.
func (j *joining) stop() {
	if j != nil {
		j.cancel()
		j.wg.Wait()
	}
}
