package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/stripe"
)

var _ net.Conn = (*stripe.Conn)(nil)

// joinWindow is how long after the server takes a transport offer its
// further stripes may join.
const joinWindow = 10 * time.Second

// takeTransport answers a client that offered the striped transport
// (contract.TransportParam) with the mode taken and returns the striped
// connection, which from then on carries the session; end, deferred by
// the session, releases it (also on an error, client is the connection to
// answer on). A client that offered nothing, a passthrough
// target and a server with NoStriping keep the raw stream. It runs once
// the client has proved itself and holds a session slot, so joins never
// outnumber sessions.
func (s *Server) takeTransport(client net.Conn, params pgwire.Params, t *discovery.Target, info *sessionInfo) (conn net.Conn, end func(), err error) {
	info.transport = "raw"
	offer, ok := params.Get(contract.TransportParam)
	if !ok || s.cfg.NoStriping || t.Auth != discovery.AuthIAM {
		return client, func() {}, nil
	}
	tr, err := contract.ParseTransport(offer)
	if err != nil || tr.Version != contract.TransportVersion {
		return client, func() {}, nil // an offer this server cannot read: the raw stream, as before striping
	}
	tr.Stripes = min(tr.Stripes, s.cfg.MaxStripes)
	tr.Lane = tr.Lane && tr.Stripes > 1 // one stripe is the whole connection: no lane beside it
	if tr.Compress != "zstd" {
		tr.Compress = ""
	}
	if tr.ID, err = newJoinID(); err != nil {
		return client, func() {}, err
	}
	// The stripes may join as soon as the client has read the answer, so
	// the id is in the join table before the answer is written.
	sc := stripe.New(client, stripe.Options{Codec: s.codec, Compress: tr.Compress != "", MaxStripes: tr.Stripes, Lane: tr.Lane})
	j := s.joins.open(tr.ID, sc, tr.Stripes, time.Now().Add(joinWindow))
	end = func() {
		s.joins.close(j)
		sc.Close() // after the relay's or the refusal's last write: Close flushes
	}
	if _, err := client.Write(pgwire.AppendParameterStatus(nil, contract.TransportParam, tr.String())); err != nil {
		end()
		return client, func() {}, fmt.Errorf("answer the transport offer: %w", err)
	}
	client.SetDeadline(time.Time{}) // the striped connection keeps its own deadlines; the stripes have none
	tr.ID = ""
	info.transport = tr.String()
	info.stripes = sc
	return sc, end, nil
}

// join adds a connection whose startup named a striped connection
// (contract.JoinParam) as one more of its stripes, and holds it until that
// connection's session ends.
func (s *Server) join(conn net.Conn, ph *phase, id string) {
	j, err := s.joins.claim(id, time.Now())
	if err != nil {
		s.startupFailed(ph.pc.conn, conn, ph, err)
		return
	}
	s.pending.remove(ph.pc)
	conn.SetDeadline(time.Now().Add(s.cfg.FirstByteTimeout))
	if _, err := conn.Write(pgwire.AppendParameterStatus(nil, contract.JoinParam, "ok")); err != nil {
		s.joins.release(j) // this stripe will not join: its place is for another
		s.log.Debug("stripe join: answer failed", "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	if err := j.conn.Add(conn); err != nil { // the session ended meanwhile
		s.log.Debug("stripe join: the connection ended before the stripe joined", "err", err)
		return
	}
	s.log.Debug("stripe joined", "stripes", j.conn.Stripes())
	s.track(ph.pc.conn, false) // the session's stripes: its relay ends them, not the drain's first sweep
	<-j.done
}

func newJoinID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("stripe id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// joinable is a striped connection that further stripes may join.
type joinable struct {
	id      string
	conn    *stripe.Conn
	left    int       // stripes that may still join
	expires time.Time // joins after this are refused
	done    chan struct{}
}

// joinTable holds the striped connections of live sessions by id.
type joinTable struct {
	mu sync.Mutex
	m  map[string]*joinable
}

func (t *joinTable) open(id string, c *stripe.Conn, stripes int, expires time.Time) *joinable {
	j := &joinable{id: id, conn: c, left: stripes - 1, expires: expires, done: make(chan struct{})}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*joinable)
	}
	t.m[id] = j
	return j
}

// close ends j's joins and releases the stripes that joined.
func (t *joinTable) close(j *joinable) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, j.id)
	close(j.done)
}

// claim takes one stripe place of the connection id names.
func (t *joinTable) claim(id string, now time.Time) (*joinable, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.m[id]
	switch {
	case j == nil || now.After(j.expires):
		return nil, joinRefused("rdsproxy: this stripe names no connection that takes stripes now (unknown id, or its join window of %s has passed)", joinWindow)
	case j.left == 0:
		return nil, joinRefused("rdsproxy: the connection this stripe names has all its stripes")
	}
	j.left--
	return j, nil
}

// release gives back the place claim took for a stripe that did not join.
// The place is taken before the stripe is answered, not after, so that
// two stripes racing for the last place cannot both be told "ok".
func (t *joinTable) release(j *joinable) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j.left++
}

func joinRefused(format string, args ...any) *pgwire.Error {
	return pgwire.Errorf(pgwire.CodeProtocolViolation, contract.ReasonStripeJoin, format, args...).
		WithHint("Stripes are opened by `rdsproxy connect` right after the server takes its offer; the connection goes on without this one.")
}
