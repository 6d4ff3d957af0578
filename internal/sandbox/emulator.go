package sandbox

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// The sandbox AWS identity. Tokens signed with it verify in the Emulator.
// It grants nothing anywhere.
const (
	Region          = "us-east-1"
	AccessKeyID     = "AKIASANDBOXEXAMPLE01"
	SecretAccessKey = "sandbox/rdsproxy/iam-emulator/not-secret"
)

// Credentials returns the sandbox AWS identity.
func Credentials() aws.Credentials {
	return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, Source: "rdsproxy sandbox"}
}

// Emulator limits, as a real RDS instance bounds an unauthenticated client.
// The startup timeout is PostgreSQL's default authentication_timeout, which
// RDS keeps: a login in a burst of hundreds may wait its turn.
const (
	emuStartupTimeout = time.Minute
	emuMaxStartup     = 10000
	emuMaxPassword    = 8 << 10
	emuCheckTimeout   = 5 * time.Second
)

// EmulatorConfig configures StartEmulator.
type EmulatorConfig struct {
	Postgres  *Postgres // required: where accepted sessions go
	CA        *CA       // signs the default certificate; required unless Cert is set
	Endpoints []string  // RDS-style "host:port" endpoints impersonated; at least one
	// Cert overrides the certificate (tests for a wrong certificate).
	// Default: CA.Issue(every endpoint host).
	Cert *tls.Certificate
	// Region is the region of endpoints whose host name names none. An RDS
	// host name (id.hash.region.rds.amazonaws.com) names its own, and its
	// tokens must be scoped to it, as RDS verifies a token against the
	// region of the instance it reached; when set, Region must agree with
	// every such name. Default Region.
	Region string
	// Credentials maps access key id to secret; default: the sandbox
	// identity (AccessKeyID) and moto's (MotoAccessKeyID).
	Credentials map[string]string
	Now         func() time.Time // default time.Now
	Logger      *slog.Logger     // default: discard
	// StartupTimeout bounds SSL negotiation, startup and authentication,
	// the rds_iam membership check included; default 1m.
	StartupTimeout time.Duration
}

// Emulator impersonates RDS instances with rds.force_ssl=1 and IAM
// database authentication in front of the sandbox PostgreSQL.
type Emulator struct {
	cfg       EmulatorConfig
	endpoints map[string]string // lower-case "host:port" -> its region
	tlsConfig *tls.Config
	log       *slog.Logger
	ln        net.Listener
	accepted  atomic.Int64
	members   *memberChecker

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // client and upstream connections
	closed bool

	wg        sync.WaitGroup // accept loop and one per connection
	closeOnce sync.Once
}

// StartEmulator listens on 127.0.0.1 (a free port) and serves until Close.
func StartEmulator(ctx context.Context, cfg EmulatorConfig) (*Emulator, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("start rds iam emulator: %w", err)
	}
	e := &Emulator{cfg: cfg, endpoints: make(map[string]string), log: cfg.Logger, conns: make(map[net.Conn]struct{}),
		members: newMemberChecker(cfg.Postgres.SuperuserDSN())}
	for _, ep := range cfg.Endpoints {
		host, _, _ := net.SplitHostPort(ep) // setDefaults checked it
		e.endpoints[strings.ToLower(ep)] = cmp.Or(hostRegion(host), cfg.Region)
	}
	e.tlsConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.Cert}, MinVersion: tls.VersionTLS12}
	if err := e.members.open(ctx); err != nil {
		return nil, fmt.Errorf("start rds iam emulator: %w", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		e.members.close(ctx)
		return nil, fmt.Errorf("start rds iam emulator: %w", err)
	}
	e.ln = ln
	// Not derived from ctx: the emulator outlives StartEmulator; Close ends it.
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.wg.Add(1)
	go e.acceptLoop()
	e.log.Info("rds iam emulator ready", "addr", e.Addr(), "endpoints", cfg.Endpoints)
	return e, nil
}

func (c *EmulatorConfig) setDefaults() error {
	if c.Postgres == nil {
		return errors.New("no Postgres")
	}
	if len(c.Endpoints) == 0 {
		return errors.New("no Endpoints")
	}
	var hosts []string
	for _, ep := range c.Endpoints {
		host, _, err := net.SplitHostPort(ep)
		if err != nil {
			return fmt.Errorf("endpoint %q: %w", ep, err)
		}
		if r := hostRegion(host); r != "" && c.Region != "" && r != c.Region {
			return fmt.Errorf("endpoint %q is in region %s, not Region %s", ep, r, c.Region)
		}
		hosts = append(hosts, host)
	}
	if c.Cert == nil {
		if c.CA == nil {
			return errors.New("neither CA nor Cert")
		}
		cert, err := c.CA.Issue(hosts...)
		if err != nil {
			return err
		}
		c.Cert = &cert
	}
	if c.Region == "" {
		c.Region = Region
	}
	if c.Credentials == nil {
		c.Credentials = map[string]string{AccessKeyID: SecretAccessKey, MotoAccessKeyID: MotoSecretAccessKey}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.StartupTimeout <= 0 {
		c.StartupTimeout = emuStartupTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// hostRegion returns the region an RDS host name names
// (id.hash.region.rds.amazonaws.com, or .com.cn in China), or "" for any
// other name.
func hostRegion(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, suffix := range []string{".rds.amazonaws.com", ".rds.amazonaws.com.cn"} {
		if rest, ok := strings.CutSuffix(h, suffix); ok {
			if i := strings.LastIndexByte(rest, '.'); i > 0 && i < len(rest)-1 {
				return rest[i+1:]
			}
		}
	}
	return ""
}

// Addr is the listening address, 127.0.0.1:port.
func (e *Emulator) Addr() string { return e.ln.Addr().String() }

// Accepted counts TCP connections accepted so far.
func (e *Emulator) Accepted() int64 { return e.accepted.Load() }

// Close stops accepting, closes every connection and waits for all of the
// emulator's goroutines.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.cancel()
		if cerr := e.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close rds iam emulator: %w", cerr)
		}
		e.mu.Lock()
		e.closed = true
		for c := range e.conns {
			_ = c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
		e.members.close(e.ctx)
	})
	return err
}

func (e *Emulator) acceptLoop() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				e.log.Error("rds iam emulator accept", "err", err)
			}
			return
		}
		e.accepted.Add(1)
		if !e.track(c) {
			_ = c.Close()
			continue
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer e.untrack(c)
			s := &emuSession{e: e, raw: c, conn: c, remote: c.RemoteAddr().String()}
			s.serve()
		}()
	}
}

// track registers c so that Close closes it; false once closed.
func (e *Emulator) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.conns[c] = struct{}{}
	return true
}

func (e *Emulator) untrack(c net.Conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	_ = c.Close()
}
