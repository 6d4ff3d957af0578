package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// The local CA signs the certificate `connect --local-tls` presents to
// local clients. It is kept in the state directory so that a client
// configured with sslrootcert (verify-full) keeps working across restarts;
// the leaf certificate is issued anew at each start.
const (
	localCAKeyFile  = "local-ca-key.pem" // certificate and private key, 0600
	localCAFile     = "local-ca.pem"     // certificate only: the sslrootcert
	localCAValidity = 10 * 365 * 24 * time.Hour
	localLeafLife   = 365 * 24 * time.Hour
)

// localTLS returns the server-side TLS settings for the loopback hop and
// the path of the CA certificate clients can verify against.
func localTLS(dir, address string, now time.Time) (*tls.Config, string, error) {
	ca, key, err := loadOrCreateLocalCA(dir, now)
	if err != nil {
		return nil, "", fmt.Errorf("local TLS: %w", err)
	}
	caFile := filepath.Join(dir, localCAFile)
	if err := writeFileAtomic(caFile, pemBlock("CERTIFICATE", ca.Raw), 0o644); err != nil {
		return nil, "", fmt.Errorf("local TLS: %w", err)
	}
	leaf, err := issueLocalLeaf(ca, key, address, now)
	if err != nil {
		return nil, "", fmt.Errorf("local TLS: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}, caFile, nil
}

// loadOrCreateLocalCA loads the CA from dir, creating it on first use.
// Concurrent first runs agree on one CA: the file appears by a hard link,
// which fails when another process created it first.
func loadOrCreateLocalCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, localCAKeyFile)
	b, err := readPrivateFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createLocalCA(dir, path, now); err != nil {
			return nil, nil, err
		}
		b, err = readPrivateFile(path)
	}
	if err != nil {
		return nil, nil, err
	}
	ca, key, err := parseLocalCA(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w; remove it to create a new local CA", path, err)
	}
	if now.After(ca.NotAfter) {
		return nil, nil, fmt.Errorf("%s expired on %s; remove it to create a new local CA", path, ca.NotAfter.Format(time.DateOnly))
	}
	return ca, key, nil
}

// readPrivateFile reads a file that holds a private key, refusing one
// that other users may read, as ssh does: its key may have been copied,
// and whoever has it can impersonate the local listener to every client
// that trusts the CA.
func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if mode := info.Mode().Perm(); mode&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%s holds the local CA's private key but is readable by other users (mode %04o): "+
			"remove it to create a new local CA (clients then need the new %s), or chmod 600 it if no one else could have read it",
			path, mode, localCAFile)
	}
	return io.ReadAll(f)
}

func createLocalCA(dir, path string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "rdsproxy local CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(localCAValidity),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create local CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, localCAKeyFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)...))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func parseLocalCA(b []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	var ca *x509.Certificate
	var key *ecdsa.PrivateKey
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			ca = c
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, nil, errors.New("the key is not an ECDSA key")
			}
			key = ek
		}
	}
	if ca == nil || key == nil || !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, errors.New("not a certificate with its private key")
	}
	return ca, key, nil
}

// issueLocalLeaf issues the listener's certificate for localhost and the
// loopback addresses, plus address when it is a specific other IP.
func issueLocalLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, address string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(localLeafLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	if ip := net.ParseIP(address); ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue local certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
