package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// selfSigned is a TLS certificate for "db.test".
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db.test"},
		DNSNames: []string{"db.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsPeer is a loopback TLS server for "db.test" with one connection, and
// a bufferedTLS client to it.
type tlsPeer struct {
	tickets    bool                    // the server sends session tickets after the handshake
	wrapServer func(net.Conn) net.Conn // the server's socket as its TLS sees it; nil: as is
	wrapClient func(net.Conn) net.Conn // the client's socket as its TLS sees it; nil: as is
}

// dial starts the server, which runs serve after its handshake, and returns
// the client after its own, and the client's raw socket.
func (p tlsPeer) dial(t *testing.T, serve func(*tls.Conn)) (*bufferedTLS, net.Conn) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return // the client's handshake fails the test
		}
		c := tls.Server(wrap(raw, p.wrapServer), &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: !p.tickets})
		defer c.Close()
		if c.Handshake() == nil {
			serve(c)
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedTLS(wrap(raw, p.wrapClient), &tls.Config{ServerName: "db.test", RootCAs: pool})
	t.Cleanup(func() { c.Close() })
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	return c, raw
}

func wrap(c net.Conn, with func(net.Conn) net.Conn) net.Conn {
	if with == nil {
		return c
	}
	return with(c)
}

// ReadBuffered hands over the records TLS already holds and never reads
// the socket: with nothing buffered it returns at once, and the
// connection stays usable for blocking reads and writes afterwards.
func TestBufferedTLSNeverBlocks(t *testing.T) {
	records := make(chan int)
	serverDone := make(chan error, 1)
	c, _ := tlsPeer{tickets: true}.dial(t, func(c *tls.Conn) {
		for n := range records { // n records of 8 KiB, one Write each
			for i := range n {
				if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 8<<10)); err != nil {
					serverDone <- err
					return
				}
			}
		}
		serverDone <- nil
	})
	if n, err := c.ReadBuffered(make([]byte, 1024)); n != 0 || err != nil {
		t.Fatalf("ReadBuffered with nothing sent = %d, %v; want 0, nil at once", n, err)
	}
	records <- 8
	want := 8 * 8 << 10
	got := 0
	buf := make([]byte, 64<<10)
	for got < want { // a blocking read, then whatever is already buffered
		n, err := c.Read(buf[:2<<10])
		if err != nil {
			t.Fatal(err)
		}
		got += n
		for {
			m, err := c.ReadBuffered(buf)
			if err != nil {
				t.Fatal(err)
			}
			if m == 0 {
				break
			}
			got += m
		}
	}
	if got != want {
		t.Fatalf("read %d bytes, want %d", got, want)
	}
	close(records)
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadAll(c); len(n) != 0 || err != nil {
		t.Fatalf("after the server closed: %d bytes, %v; want a clean EOF", len(n), err)
	}
}

// socketWrites counts the writes that reach a socket.
type socketWrites struct {
	net.Conn
	n atomic.Int64
}

func (c *socketWrites) Write(p []byte) (int, error) { c.n.Add(1); return c.Conn.Write(p) }

// A relay chunk of 64 KiB towards the database (a COPY in) is four TLS
// records; they leave in one socket write, intact, and a small write still
// leaves at once on its own.
func TestBufferedTLSGathersRecords(t *testing.T) {
	chunk := bytes.Repeat([]byte("copy-in-row\n"), 64<<10/12)
	received := make(chan []byte, 1)
	var counted *socketWrites
	c, _ := tlsPeer{tickets: true, wrapClient: func(raw net.Conn) net.Conn {
		counted = &socketWrites{Conn: raw}
		return counted
	}}.dial(t, func(c *tls.Conn) {
		got, _ := io.ReadAll(c)
		received <- got
	})
	before := counted.n.Load()
	if n, err := c.Write(chunk); n != len(chunk) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(chunk))
	}
	if w := counted.n.Load() - before; w != 1 {
		t.Fatalf("a %d-byte write took %d socket writes, want 1", len(chunk), w)
	}
	if _, err := c.Write([]byte("Q")); err != nil || counted.n.Load()-before != 2 {
		t.Fatalf("a 1-byte write: %v, %d socket writes in all; want it sent at once", err, counted.n.Load()-before)
	}
	c.Close()
	if got := <-received; !bytes.Equal(got, append(chunk, 'Q')) {
		t.Fatalf("the database got %d bytes, want the %d written, in order", len(got), len(chunk)+1)
	}
}

// The relay holds a chunk with a read deadline (relay's hold), which can
// fire while half a TLS record has arrived: the connection stays usable,
// and once the rest arrives the record reads whole. (crypto/tls keeps a
// partial record after a temporary error; a Go release that stopped doing
// so would break every hold that times out.)
func TestBufferedTLSSurvivesADeadlineMidRecord(t *testing.T) {
	payload := bytes.Repeat([]byte("row "), 2000)
	split := &halfWriter{halfSent: make(chan struct{}), release: make(chan struct{})}
	serverDone := make(chan error, 1)
	c, _ := tlsPeer{wrapServer: func(raw net.Conn) net.Conn { split.Conn = raw; return split }}.dial(t, func(c *tls.Conn) {
		split.splitting.Store(true)
		_, err := c.Write(payload) // its first record: half now, half on release
		serverDone <- err
		c.Read(make([]byte, 1)) // until the client hangs up
	})
	<-split.halfSent
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, len(payload))
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of half a record: %d, %v; want the deadline", n, err)
	}
	c.SetReadDeadline(time.Time{})
	close(split.release)
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, payload) {
		t.Fatalf("after the deadline: %v, intact %v; want the whole record", err, bytes.Equal(buf, payload))
	}
}

// halfWriter, once splitting, sends the first half of the next write (a
// TLS record) at once and the rest only on release.
type halfWriter struct {
	net.Conn
	splitting atomic.Bool
	halfSent  chan struct{}
	release   chan struct{}
}

func (w *halfWriter) Write(p []byte) (int, error) {
	if !w.splitting.CompareAndSwap(true, false) { // only the first record is split
		return w.Conn.Write(p)
	}
	half := len(p) / 2
	if _, err := w.Conn.Write(p[:half]); err != nil {
		return 0, err
	}
	close(w.halfSent)
	<-w.release
	if _, err := w.Conn.Write(p[half:]); err != nil {
		return half, err
	}
	return len(p), nil
}

// CloseWrite ends the stream as TLS does (close_notify) and as TCP does
// (FIN), so a database that watches its socket sees the client's end;
// the database can still answer after it.
func TestBufferedTLSCloseWriteHalfClosesTheSocket(t *testing.T) {
	sockets := make(chan net.Conn, 1)
	ended := make(chan error, 1)
	c, _ := tlsPeer{wrapServer: func(raw net.Conn) net.Conn { sockets <- raw; return raw }}.dial(t, func(c *tls.Conn) {
		raw := <-sockets
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil { // to close_notify
			ended <- err
			return
		}
		_, err := raw.Read(make([]byte, 1)) // then the socket's own end
		if err == io.EOF {
			_, err = c.Write([]byte("bye"))
		}
		ended <- err
	})
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; err != nil {
		t.Fatalf("the database's side: %v, want close_notify, then EOF on the socket", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); string(got) != "bye" {
		t.Fatalf("after CloseWrite read %q, %v; want the database's answer", got, err)
	}
}
