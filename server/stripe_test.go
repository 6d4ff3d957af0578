package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/internal/stripe"
)

// refusedJoin asserts err is the 08P01 stripe-join refusal a joining
// stripe gets, with a message containing want.
func refusedJoin(t *testing.T, j *joinable, err error, want string) {
	t.Helper()
	if j != nil || err == nil {
		t.Fatalf("claim = %v, %v; want a refusal", j, err)
	}
	var pe *pgwire.Error
	if !errors.As(err, &pe) {
		t.Fatalf("claim error %v (%T), want a *pgwire.Error", err, err)
	}
	if pe.Code != pgwire.CodeProtocolViolation || pe.Reason != contract.ReasonStripeJoin || !strings.Contains(pe.Message, want) {
		t.Fatalf("claim refused with %s %s %q, want 08P01 %s containing %q", pe.Code, pe.Reason, pe.Message, contract.ReasonStripeJoin, want)
	}
}

// A stripe naming an id no live striped connection has is refused.
func TestJoinTableUnknownID(t *testing.T) {
	var tab joinTable
	now := time.Now()
	j, err := tab.claim("00000000000000000000000000000000", now)
	refusedJoin(t, j, err, "names no connection")
	tab.open("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nil, 4, now.Add(joinWindow))
	j, err = tab.claim("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", now)
	refusedJoin(t, j, err, "names no connection")
	if j, err := tab.claim("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", now); err != nil || j == nil {
		t.Fatalf("claim of the live id = %v, %v; want a place", j, err)
	}
}

// Joins are taken up to the window's end, and refused after it, even
// with places left.
func TestJoinTableWindow(t *testing.T) {
	var tab joinTable
	opened := time.Now()
	expires := opened.Add(joinWindow)
	id := "0123456789abcdef0123456789abcdef"
	tab.open(id, nil, 4, expires)
	if _, err := tab.claim(id, opened.Add(joinWindow/2)); err != nil {
		t.Fatalf("claim within the window: %v", err)
	}
	if _, err := tab.claim(id, expires); err != nil {
		t.Fatalf("claim at the window's last instant: %v", err)
	}
	j, err := tab.claim(id, expires.Add(time.Millisecond))
	refusedJoin(t, j, err, "join window")
}

// A connection of K stripes takes K-1 joins, and refuses the next; a
// refusal does not use a place up.
func TestJoinTableBeyondStripes(t *testing.T) {
	for _, k := range []int{1, 2, 4, contract.MaxTransportStripes} {
		var tab joinTable
		now := time.Now()
		id := "ffffffffffffffffffffffffffffffff"
		opened := tab.open(id, nil, k, now.Add(joinWindow))
		for i := 1; i < k; i++ {
			j, err := tab.claim(id, now)
			if err != nil || j != opened {
				t.Fatalf("k=%d: join %d = %v, %v; want the connection's place", k, i, j, err)
			}
		}
		for range 2 {
			j, err := tab.claim(id, now)
			refusedJoin(t, j, err, "has all its stripes")
		}
	}
}

// When its session ends, a connection takes no more joins, and the
// stripes that joined (waiting on done) are released.
func TestJoinTableCloseEndsJoins(t *testing.T) {
	var tab joinTable
	now := time.Now()
	id := "abcdefabcdefabcdefabcdefabcdef12"
	opened := tab.open(id, nil, 4, now.Add(joinWindow))
	j, err := tab.claim(id, now)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() { <-j.done; close(released) }() // as a joined stripe waits in Server.join
	select {
	case <-released:
		t.Fatal("a joined stripe was released while its connection lives")
	default:
	}
	tab.close(opened)
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not release the joined stripe")
	}
	j, err = tab.claim(id, now)
	refusedJoin(t, j, err, "names no connection")
	// Another connection's id is unaffected.
	other := tab.open("11111111111111111111111111111111", nil, 2, now.Add(joinWindow))
	if j, err := tab.claim(other.id, now); err != nil || j != other {
		t.Fatalf("claim on another connection after a close = %v, %v", j, err)
	}
}

// A stripe that hangs up before the server's "ok" reaches it gives its
// place back: the connection's next stripe still joins, so a connection
// offered K stripes can still get K.
func TestJoinAnswerFailedGivesPlaceBack(t *testing.T) {
	s := newJoinServer(t)
	sc := newStripedConn(t, 2)
	id := "feedfacefeedfacefeedfacefeedface"
	j := s.joins.open(id, sc, 2, time.Now().Add(joinWindow))

	gone, server := net.Pipe()
	gone.Close() // the server's answer to this stripe fails
	s.join(server, newJoinPhase(s, server), id)

	client, server := net.Pipe()
	joined := make(chan struct{})
	defer func() {
		client.Close()
		s.joins.close(j) // the session ends: its stripes are released
		<-joined
	}()
	client.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	go func() {
		defer close(joined)
		s.join(server, newJoinPhase(s, server), id) // holds the stripe until the session ends
	}()
	m, err := pgwire.ReadMessage(client, nil, 1<<16)
	if err != nil {
		t.Fatalf("read the join's answer: %v", err)
	}
	if m.Type != pgwire.MsgParameterStatus || string(m.Body()) != contract.JoinParam+"\x00ok\x00" {
		t.Fatalf("the next stripe got %q %q, want its join taken (ParameterStatus %s ok)", m.Type, m.Body(), contract.JoinParam)
	}
}

// newJoinServer is a Server for calling join directly.
func newJoinServer(t *testing.T) *Server {
	t.Helper()
	snap, err := discovery.NewSnapshot(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := RootCAs(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Targets: fixed{snap}, RootCAs: roots, NoStriping: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newJoinPhase is the startup phase of a connection that has just sent
// its join.
func newJoinPhase(s *Server, c net.Conn) *phase {
	pc, _ := s.pending.add(c)
	return &phase{pc: pc, end: time.Now().Add(time.Minute), spoke: true}
}

// newStripedConn is a striped connection that takes k stripes, over a
// first stripe nobody reads; it is closed at once when the test ends.
func newStripedConn(t *testing.T, k int) *stripe.Conn {
	t.Helper()
	peer, first := net.Pipe()
	sc := stripe.New(first, stripe.Options{MaxStripes: k})
	t.Cleanup(func() {
		sc.SetWriteDeadline(time.Now()) // do not linger: nobody reads its END
		sc.Close()
		peer.Close()
	})
	return sc
}

// A stripe can join the moment the transport answer is out: the server
// puts the id in its join table before it writes the answer. (It used to
// write first; a client that read the answer and joined before the server
// went on lost that stripe, as CI saw twice.) The client here joins from
// inside the answer's write.
func TestJoinOpenBeforeAnswer(t *testing.T) {
	s := newJoinServer(t)
	s.cfg.NoStriping = false
	peer, conn := net.Pipe()
	defer peer.Close()
	client := &joinOnAnswer{Conn: conn, s: s}
	offer := contract.Transport{Version: contract.TransportVersion, Stripes: 2}
	params := pgwire.Params{{Key: contract.TransportParam, Value: offer.String()}}
	sc, end, err := s.takeTransport(client, params, &discovery.Target{Auth: discovery.AuthIAM}, &sessionInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	sc.SetWriteDeadline(time.Now()) // do not linger at the end: nobody reads its END
	if client.claimErr != nil {
		t.Fatalf("a join sent as soon as the answer was written: %v", client.claimErr)
	}
}

// joinOnAnswer is a client connection that claims a stripe place with the
// id of the transport answer the server writes to it, at once.
type joinOnAnswer struct {
	net.Conn
	s        *Server
	claimErr error
}

func (c *joinOnAnswer) Write(p []byte) (int, error) {
	m, err := pgwire.ReadMessage(bytes.NewReader(p), nil, 1<<16)
	if err != nil {
		return 0, err
	}
	name, value, ok := pgwire.ParameterStatus(m)
	if !ok || name != contract.TransportParam {
		return 0, fmt.Errorf("wrote %q, want the transport answer", m.Type)
	}
	tr, err := contract.ParseTransport(value)
	if err != nil {
		return 0, err
	}
	_, c.claimErr = c.s.joins.claim(tr.ID, time.Now())
	return len(p), nil
}
