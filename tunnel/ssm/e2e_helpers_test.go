package ssm_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

const testTarget = "i-0123456789abcdef0"

// echoServer echoes every connection on 127.0.0.1:0.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	var conns sync.Map
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conns.Delete(c)
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// startEndpoint starts the sandbox SSM endpoint with testTarget connected
// and checks at cleanup that the client committed no protocol violation.
func startEndpoint(t testing.TB, cfg ssmendpoint.Config) *ssmendpoint.Endpoint {
	t.Helper()
	if cfg.Targets == nil {
		cfg.Targets = []string{testTarget}
	}
	e, err := ssmendpoint.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		if v := e.Violations(); len(v) > 0 {
			t.Errorf("client protocol violations seen by the endpoint: %q", v)
		}
	})
	return e
}

// ssmClient talks to the endpoint with static credentials and no pooled
// HTTP connections (so goroutine counts settle).
func ssmClient(e *ssmendpoint.Endpoint) *awsssm.Client {
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.DisableKeepAlives = true })
	return awsssm.New(awsssm.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(e.URL()),
		Credentials:  credentials.NewStaticCredentialsProvider(ssmendpoint.DefaultAccessKeyID, ssmendpoint.DefaultSecretAccessKey, ""),
		HTTPClient:   hc,
	})
}

func newTunnel(t testing.TB, e *ssmendpoint.Endpoint, cfg ssm.Config) *ssm.Tunnel {
	t.Helper()
	cfg.API = ssmClient(e)
	if cfg.Target == "" {
		cfg.Target = testTarget
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tun, err := ssm.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// echoRoundTrip writes size seeded random bytes on c while reading the
// echo back, and checks both checksums.
func echoRoundTrip(ctx context.Context, c net.Conn, size int, seed uint64) error {
	// A hang guard, not a timing assertion: fail instead of blocking forever.
	if err := c.SetDeadline(time.Now().Add(3 * time.Minute)); err != nil {
		return err
	}
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 32<<10)
		for left := size; left > 0; {
			n := min(left, len(buf))
			for i := range buf[:n] {
				buf[i] = byte(rng.Uint32())
			}
			sent.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				errc <- err
				return
			}
			left -= n
		}
		errc <- nil
	}()
	got := sha256.New()
	if _, err := io.CopyN(got, c, int64(size)); err != nil {
		return errors.Join(err, ctx.Err())
	}
	if err := <-errc; err != nil {
		return err
	}
	if string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return errors.New("echoed bytes differ from sent bytes (checksum mismatch)")
	}
	return nil
}
