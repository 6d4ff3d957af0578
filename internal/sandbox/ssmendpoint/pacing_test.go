package ssmendpoint_test

import (
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TestAgentSharesNoClientCode: the endpoint's agent side is an
// implementation of its own. Nothing it is built from comes from the
// client's packages (tunnel/...), so the client and its double cannot share
// an assumption by sharing code; the frame codec is pinned by the golden
// vectors instead (TestFrameGoldenVectors).
func TestAgentSharesNoClientCode(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), goTool(), "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/rdsproxy/rdsproxy/tunnel") {
			t.Errorf("the endpoint is built from the client's package %s", pkg)
		}
	}
}

// TestAgentPacedByDefault: with its default Config the agent paces like the
// real one's pumps, in both directions: it reads at most 1 KiB at a time
// and sleeps 1 ms after each read, so 2 MiB take at least 2 s each way on
// any machine (unpaced, the tunnel moves them in tens of milliseconds).
func TestAgentPacedByDefault(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	const floor = size / 1024 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	uploaded := make(chan time.Time, 1)
	served := make(chan error, 1)
	go func() { served <- sinkThenSource(ln, size, uploaded) }()

	e := matrixEndpoint(t, ssmendpoint.Config{Dest: ln.Addr().String()})
	tun, err := ssm.New(t.Context(), ssm.Config{API: apiClient(e), Target: matrixTarget, Port: 5432, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	var up time.Time
	select {
	case up = <-uploaded:
	case err := <-served:
		t.Fatalf("destination: %v", err)
	}
	n, err := io.Copy(io.Discard, c)
	down := time.Now()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	t.Logf("2 MiB up in %v, down in %v", up.Sub(start), down.Sub(up))
	if d := up.Sub(start); d < floor {
		t.Errorf("client to destination took %v, under the paced agent's floor of %v", d, floor)
	}
	if d := down.Sub(up); d < floor {
		t.Errorf("destination to client took %v, under the paced agent's floor of %v", d, floor)
	}
}

// sinkThenSource serves one connection: it reads size bytes, reports when,
// then writes size bytes and closes.
func sinkThenSource(ln net.Listener, size int64, uploaded chan<- time.Time) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.CopyN(io.Discard, c, size); err != nil {
		return err
	}
	uploaded <- time.Now()
	_, err = io.Copy(c, io.LimitReader(zeros{}, size))
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
