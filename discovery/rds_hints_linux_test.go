package discovery_test

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/rds"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// TestDiscoveryUnansweredDialSaysRoute: a route that drops packets (a
// private subnet with no NAT gateway and no RDS endpoint) makes the dial
// time out rather than be refused; the warning still names the route. A
// dial timeout is also a context.DeadlineExceeded (Go 1.23 on), and the
// hint once took it for a slow refresh and named the permissions.
func TestDiscoveryUnansweredDialSaysRoute(t *testing.T) {
	addr := unansweredAddr(t)
	client := func(region string) discovery.RDSAPI {
		return rds.NewFromConfig(aws.Config{
			Region:           region,
			Credentials:      credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "secret", ""),
			RetryMaxAttempts: 1,
			HTTPClient:       awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) { d.Timeout = time.Second }),
		}, func(o *rds.Options) { o.BaseEndpoint = aws.String("http://" + addr) })
	}
	f := newFixture(t, client, []string{"us-east-1"}, discovery.Rules{}, 0)
	err := f.watcher.Refresh(t.Context())
	if err == nil || !strings.Contains(err.Error(), "i/o timeout") {
		t.Fatalf("refresh against a port that drops connections: %v, want a dial timeout", err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "check that the server can reach the RDS API") {
		t.Errorf("a dial that times out: the warning should name the route:\n%s", logs)
	}
}

// unansweredAddr returns a loopback address whose listener never
// accepts and whose accept queue is full: Linux then drops new SYNs, and
// a dial to it waits until its timeout.
func unansweredAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue did not fill")
	return ""
}

// TestDiscoverySilentAPISaysTooSlow: an API that takes the connection and
// never answers runs the refresh out of time; the warning says the API
// was too slow, not that the permissions are wrong.
func TestDiscoverySilentAPISaysTooSlow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn // open, never answered, closed with the listener
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	src, err := discovery.NewSource([]string{"us-east-1"}, func(region string) discovery.RDSAPI {
		return rds.NewFromConfig(aws.Config{Region: region, RetryMaxAttempts: 1,
			Credentials: credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "secret", "")},
			func(o *rds.Options) { o.BaseEndpoint = aws.String("http://" + ln.Addr().String()) })
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	w, err := discovery.NewWatcher(discovery.WatcherConfig{Fetch: src.Fetch, RefreshTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(t.Context()); err == nil {
		t.Fatal("a refresh against an API that never answers succeeded")
	}
	if !strings.Contains(logs.String(), "the RDS API answered too slowly") {
		t.Errorf("an API that never answers: the warning should say it was too slow:\n%s", logs.String())
	}
}
