package cli

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// handshake runs a TLS handshake against cfg, verifying like a client with
// sslmode=verify-full and sslrootcert=caFile would, for serverName.
func handshake(t *testing.T, cfg *tls.Config, caFile, serverName string) error {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		if c, err := ln.Accept(); err == nil {
			tls.Server(c, cfg).Handshake()
			c.Close()
		}
	}()
	defer func() { <-served }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return tls.Client(c, &tls.Config{RootCAs: roots, ServerName: serverName}).Handshake()
}

// The local CA is created once, kept private, reused across starts, and
// the listener's certificate verifies for localhost and the loopback IPs.
func TestLocalTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cfg, caFile, err := localTLS(dir, "127.0.0.1", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := handshake(t, cfg, caFile, name); err != nil {
			t.Errorf("verify-full for %s: %v", name, err)
		}
	}
	if err := handshake(t, cfg, caFile, "db.example.com"); err == nil {
		t.Error("the local certificate verified for a name it must not hold")
	}
	st, err := os.Stat(filepath.Join(dir, localCAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	first, _ := os.ReadFile(caFile)

	// Restarted: a new leaf, the same CA, so sslrootcert keeps working.
	cfg2, caFile2, err := localTLS(dir, "127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(caFile2)
	if caFile2 != caFile || string(first) != string(second) {
		t.Fatal("the local CA changed across starts")
	}
	if err := handshake(t, cfg2, caFile, "localhost"); err != nil {
		t.Errorf("after restart: %v", err)
	}
}

// Concurrent first starts agree on one CA.
func TestLocalTLSConcurrentFirstStarts(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	cfgs := make([]*tls.Config, 8)
	errs := make([]error, 8)
	for i := range cfgs {
		wg.Add(1)
		go func() { defer wg.Done(); cfgs[i], _, errs[i] = localTLS(dir, "127.0.0.1", time.Now()) }()
	}
	wg.Wait()
	for i, cfg := range cfgs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if err := handshake(t, cfg, filepath.Join(dir, localCAFile), "localhost"); err != nil {
			t.Errorf("start %d does not chain to the CA on disk: %v", i, err)
		}
	}
}

// A damaged or expired CA file is an error that says how to recover; an
// unusable state directory is an error naming local TLS.
func TestLocalTLSBadCA(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := localTLS(dir, "127.0.0.1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := localTLS(dir, "127.0.0.1", time.Now().Add(11*365*24*time.Hour)); err == nil ||
		!strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("expired CA: %v", err)
	}
	notADir := filepath.Join(dir, "file")
	os.WriteFile(notADir, nil, 0o600)
	if _, _, err := localTLS(filepath.Join(notADir, "state"), "127.0.0.1", time.Now()); err == nil || !strings.Contains(err.Error(), "local TLS") {
		t.Errorf("unusable state directory: %v", err)
	}
	os.WriteFile(filepath.Join(dir, localCAKeyFile), []byte("not pem"), 0o600)
	if _, _, err := localTLS(dir, "127.0.0.1", time.Now()); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("damaged CA: %v", err)
	}
}

// A listener on another specific address gets that IP in its certificate;
// one on all addresses does not claim any of them.
func TestLocalTLSAddress(t *testing.T) {
	dir := t.TempDir()
	cfg, caFile, err := localTLS(dir, "10.1.2.3", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, caFile, "10.1.2.3"); err != nil {
		t.Errorf("--address 10.1.2.3: %v", err)
	}
	cfg, _, err = localTLS(dir, "0.0.0.0", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, caFile, "0.0.0.0"); err == nil {
		t.Error("a certificate for 0.0.0.0")
	}
}

// A local CA key that other users may read is refused, not used: its key
// may have been copied.
func TestLocalTLSKeyReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, _, err := localTLS(dir, "127.0.0.1", now); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, localCAKeyFile)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := localTLS(dir, "127.0.0.1", now)
		if err == nil || !strings.Contains(err.Error(), "readable by other users") || !strings.Contains(err.Error(), "remove it") {
			t.Errorf("mode %04o: %v, want a refusal that says what to do", mode, err)
		}
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := localTLS(dir, "127.0.0.1", now); err != nil {
		t.Fatalf("mode 0600: %v", err)
	}
}
