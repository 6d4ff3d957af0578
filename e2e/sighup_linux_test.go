package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A SIGHUP that arrives while the server is still starting (a certificate
// renewal's hook beside a restart) is a reload once the server runs, not
// the signal's default action: the server used to die of it, silently,
// until the reload loop had subscribed. The test holds the server at a
// known point of its startup by handing it its certificate through a
// FIFO, which it reads after it has set up its signals.
func TestBinarySIGHUPWhileStarting(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeServerCert(t, dir)
	fifo := filepath.Join(dir, "cert-fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out, _, admin := startCertServer(t, fifo, keyFile)
	var w *os.File
	waitFor(t, 60*time.Second, "the server to open its certificate", func() bool {
		var err error // ENXIO until a reader has the FIFO open
		w, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err == nil
	})
	cmd.Process.Signal(syscall.SIGHUP)                // the server is reading its certificate now
	time.Sleep(100 * time.Millisecond)                // delivery is asynchronous; the old server died within it
	if err := os.Rename(certFile, fifo); err != nil { // the reload reads a plain file
		t.Fatal(err)
	}
	pem, err := os.ReadFile(fifo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pem); err != nil {
		t.Fatalf("write the certificate to the server: %v (did SIGHUP end it?)\n%s", err, out.String())
	}
	w.Close()
	waitFor(t, 60*time.Second, "the server ready after a SIGHUP during its startup", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	waitFor(t, 20*time.Second, "the early SIGHUP's reload", func() bool {
		return strings.Contains(out.String(), `msg="TLS certificate reloaded"`)
	})
}
