package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
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

// ReadBuffered hands over the records TLS already holds and never reads
// the socket: with nothing buffered it returns at once, and the
// connection stays usable for blocking reads and writes afterwards.
func TestBufferedTLSNeverBlocks(t *testing.T) {
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	records := make(chan int)
	serverDone := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer c.Close()
		if err := c.Handshake(); err != nil {
			serverDone <- err
			return
		}
		for n := range records { // n records of 8 KiB, one Write each
			for i := range n {
				if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 8<<10)); err != nil {
					serverDone <- err
					return
				}
			}
		}
		serverDone <- nil
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedTLS(raw, &tls.Config{ServerName: "db.test", RootCAs: pool})
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
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
	if n, err := io.ReadAll(c); n != nil && len(n) != 0 || err != nil {
		t.Fatalf("after the server closed: %d bytes, %v; want a clean EOF", len(n), err)
	}
}
