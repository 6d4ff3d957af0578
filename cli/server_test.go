package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// What --dry-run prints is a configuration the parser accepts: fed back
// as the only configuration file, it yields the same configuration.
func TestDryRunPrintsAcceptedConfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM, keyPEM := selfSigned(t)
	cert, key, ca := write("cert.pem", certPEM), write("key.pem", keyPEM), write("ca.pem", certPEM)
	file := write("server.yaml", `targets:
  - name: app
    endpoint: app.example:5432
    region: eu-west-1
    database: app
    users: [alice, bob]
    read-only: true
    local-port: 6000
    principals: ["arn:aws:iam::123456789012:role/dev-*"]
  - name: local
    endpoint: pg.internal:5432
    region: eu-west-1
    auth: passthrough
    tls: disable
`)
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := Run(append([]string{"server", "--dry-run"}, args...), Env{Stdout: &out, Stderr: &errOut}); code != ExitOK {
			t.Fatalf("rdsproxy server --dry-run %q: exit %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	first := run("--config", file, "--map", "app.example:5432=127.0.0.1:5432", "--tls-cert", cert, "--tls-key", key,
		"--ca-file", ca, "--allow-plaintext", "--region", "eu-west-1", "--allow-tag", "team=db*", "--deny-tag", "env=dev",
		"--no-require-identity", "--server-id", "srv-1", "--sts-endpoint", "https://sts.example", "--drain-timeout", "7s",
		"--tcp-keepalive", "11s", "--refresh-interval", "2m")
	second := run("--config", write("printed.yaml", first))
	if first != second {
		t.Fatalf("the printed configuration, fed back, prints\n%s\nnot\n%s", second, first)
	}
	// And with nothing but defaults.
	if defaults := run(); run("--config", write("defaults.yaml", defaults)) != defaults {
		t.Fatalf("the printed defaults, fed back, differ")
	}
}

// --dry-run shows what the server computes when a flag is not given:
// the default allow rule, the server id (the host name, which clients
// sign into their identity) and the STS region (the AWS configuration's).
func TestDryRunShowsComputedDefaults(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_REGION", "eu-central-1")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cfg, errOut, code := dryRun(t)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := map[string]any{"server-id": host, "sts-region": "eu-central-1", "allow-tag": []any{"rdsproxy:enabled=true"}}
	for k, v := range want {
		if !reflect.DeepEqual(cfg[k], v) {
			t.Errorf("%s = %#v, want %#v", k, cfg[k], v)
		}
	}
	// Given flags win over what would be computed.
	cfg, _, _ = dryRun(t, "--server-id", "srv-1", "--sts-region", "us-west-2", "--allow-tag", "team=db")
	if cfg["server-id"] != "srv-1" || cfg["sts-region"] != "us-west-2" || !reflect.DeepEqual(cfg["allow-tag"], []any{"team=db"}) {
		t.Errorf("given flags: %v", cfg)
	}
}

// A configuration file named with an unexpanded ~/ (RDSPROXY_CONFIG='~/…'
// in a unit file) is read from $HOME, its static targets too.
func TestConfigPathUnderHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	conf := "targets:\n  - name: app\n    endpoint: app.example:5432\n    region: eu-west-1\n"
	if err := os.WriteFile(filepath.Join(home, "server.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RDSPROXY_CONFIG", "~/server.yaml")
	cfg, errOut, code := dryRun(t)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if targets, _ := cfg["targets"].([]any); len(targets) != 1 {
		t.Errorf("targets = %v, want the file's one", cfg["targets"])
	}
}

// selfSigned returns a PEM certificate and key for localhost.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	return selfSignedFor(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// selfSignedFor is selfSigned, valid from notBefore to notAfter.
func selfSignedFor(t *testing.T, notBefore, notAfter time.Time) (certPEM, keyPEM string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// A server with nothing to discover and no static targets says so at
// start-up, instead of only "ready targets=0".
func TestServerWithNothingToServeWarns(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	var log syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"server", "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--no-require-identity"},
			Env{Stdout: &log, Stderr: &log})
	}()
	const want = "nothing to serve: no --region to discover databases in and no targets in the configuration file"
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("server: %v", err)
	}
	if !strings.Contains(log.String(), want) {
		t.Errorf("no warning; the server logged:\n%s", log.String())
	}
}

// A server whose clients would connect in plaintext where the operator
// may not expect it says so: --listen beyond loopback without a
// certificate, and --allow-plaintext without one (where it does nothing).
func TestServerWarnsOfPlaintext(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	const beyond, noop = "--listen is not a loopback address and there is no --tls-cert", "--allow-plaintext does nothing without --tls-cert"
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", "127.0.0.1:5480"}, nil},
		{[]string{"--listen", "0.0.0.0:5480"}, []string{beyond}},
		{[]string{"--listen", "10.0.0.5:5480", "--allow-plaintext"}, []string{beyond, noop}},
	} {
		_, stderr, code := dryRun(t, tt.args...)
		if code != ExitOK {
			t.Fatalf("%q: exit %d: %s", tt.args, code, stderr)
		}
		for _, w := range []string{beyond, noop} {
			if strings.Contains(stderr, w) != slices.Contains(tt.want, w) {
				t.Errorf("%q: warning %q: %v, want %v\n%s", tt.args, w, !slices.Contains(tt.want, w), slices.Contains(tt.want, w), stderr)
			}
		}
	}
}

// Limits that another makes moot are accepted with a warning that says
// which one wins; they used to pass in silence.
func TestServerWarnsOfOvershadowedLimits(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	const firstByte, password, perSource = "--first-byte-timeout (20s) is longer than --startup-timeout (10s)",
		"--password-timeout (15s) is longer than --startup-timeout (10s)", "--max-pending-per-source (256) is more than --max-pending (100)"
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"--first-byte-timeout", "20s", "--password-timeout", "15s"}, []string{firstByte, password}},
		{[]string{"--max-pending", "100"}, []string{perSource}},
		{[]string{"--max-pending", "100", "--max-pending-per-source", "50", "--startup-timeout", "30s", "--first-byte-timeout", "20s"}, nil},
	} {
		_, stderr, code := dryRun(t, tt.args...)
		if code != ExitOK {
			t.Fatalf("%q: exit %d: %s", tt.args, code, stderr)
		}
		for _, w := range []string{firstByte, password, perSource} {
			if strings.Contains(stderr, w) != slices.Contains(tt.want, w) {
				t.Errorf("%q: warning %q: %v, want %v\n%s", tt.args, w, !slices.Contains(tt.want, w), slices.Contains(tt.want, w), stderr)
			}
		}
	}
}

// With --log-format json, the error a server stops with is a JSON log
// line like the others (a log pipeline parsed none of it before), and it
// names the flag whose address is busy.
func TestServerFailureIsALogLine(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var stdout, stderr bytes.Buffer
	code := Run([]string{"server", "--log-format", "json", "--listen", "127.0.0.1:0", "--admin-addr", busy.Addr().String()},
		Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d\n%s", code, ExitFailure, stderr.String())
	}
	var last map[string]any
	for line := range strings.Lines(stderr.String()) {
		if err := json.Unmarshal([]byte(line), &last); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
	}
	want := "--admin-addr " + busy.Addr().String() + ": bind: address already in use"
	if msg, _ := last["msg"].(string); last["level"] != "ERROR" || !strings.Contains(msg, want) {
		t.Fatalf("last line %v, want an ERROR line with %q", last, want)
	}
}

// A certificate outside its validity period is served (the files are what
// the operator installed) but never passes as a good one: the start and
// each reload warn that verifying clients refuse it. A stale file rotated
// in used to be logged as "TLS certificate reloaded" at info.
func TestServerCertificateOutOfDateWarns(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(notBefore, notAfter time.Time) {
		certPEM, keyPEM := selfSignedFor(t, notBefore, notAfter)
		if err := os.WriteFile(certFile, []byte(certPEM), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, []byte(keyPEM), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		want                string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), "expired at"},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour), "is not valid before"},
		{"current", now.Add(-time.Hour), now.Add(time.Hour), "TLS certificate reloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.notBefore, tc.notAfter)
			var logs syncbuf.Buffer
			cert := &serverCert{certFile: certFile, keyFile: keyFile}
			cert.reload(slog.New(slog.NewTextHandler(&logs, nil)))
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("reload logged:\n%s\nwant %q", logs.String(), tc.want)
			}
			if warned := strings.Contains(logs.String(), "level=WARN"); warned == (tc.name == "current") {
				t.Errorf("reload of a %s certificate logged:\n%s", tc.name, logs.String())
			}
			if got, _ := cert.get(nil); got == nil {
				t.Error("no certificate served after the reload")
			}
		})
	}
}
