package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/server"
)

// ServerCmd runs the server.
type ServerCmd struct {
	Listen              string            `help:"Address for clients (PostgreSQL and GET /v1/targets)." default:"127.0.0.1:5480" env:"RDSPROXY_LISTEN"`
	Region              []string          `help:"AWS regions to discover RDS and Aurora PostgreSQL databases in; none means static targets only." env:"RDSPROXY_REGION"`
	AllowTag            []string          `help:"Tag rule every served database must match: KEY=VALUE, KEY=GLOB or KEY (default rdsproxy:enabled=true)." env:"RDSPROXY_ALLOW_TAG" placeholder:"RULE"`
	DenyTag             []string          `help:"Tag rule that excludes a database: KEY=VALUE, KEY=GLOB or KEY." env:"RDSPROXY_DENY_TAG" placeholder:"RULE"`
	RefreshInterval     time.Duration     `help:"Time between discovery refreshes (with jitter; failures back off)." default:"60s" env:"RDSPROXY_REFRESH_INTERVAL"`
	AdminAddr           string            `help:"Address for /healthz, /readyz and /metrics." default:"127.0.0.1:9480" env:"RDSPROXY_ADMIN_ADDR"`
	Map                 map[string]string `help:"Dial override ENDPOINT=ADDR (host:port=host:port); TLS still verifies the endpoint's host name." env:"RDSPROXY_MAP" mapsep:","`
	CAFile              string            `help:"Extra PEM CA certificates for upstream TLS (the RDS global bundle is built in)." type:"existingfile" env:"RDSPROXY_CA_FILE"`
	TLSCert             string            `help:"Certificate (PEM) that lets clients use TLS to this server." type:"existingfile" env:"RDSPROXY_TLS_CERT"`
	TLSKey              string            `help:"Private key (PEM) for --tls-cert." type:"existingfile" env:"RDSPROXY_TLS_KEY"`
	MaxSessions         int               `help:"Maximum concurrent sessions; more get SQLSTATE 53300." default:"1000" env:"RDSPROXY_MAX_SESSIONS"`
	AllowPlaintext      bool              `help:"With --tls-cert, also accept clients that do not use TLS (their tokens then cross the network in clear)." env:"RDSPROXY_ALLOW_PLAINTEXT"`
	FirstByteTimeout    time.Duration     `help:"Time a new connection has to send its first packet." default:"5s" env:"RDSPROXY_FIRST_BYTE_TIMEOUT"`
	PasswordTimeout     time.Duration     `help:"Time a client has to send its IAM token once asked for it." default:"5s" env:"RDSPROXY_PASSWORD_TIMEOUT"`
	StartupTimeout      time.Duration     `help:"Time a client has to complete its whole startup, TLS included." default:"10s" env:"RDSPROXY_STARTUP_TIMEOUT"`
	DialTimeout         time.Duration     `help:"Time to connect to a database and negotiate TLS." default:"10s" env:"RDSPROXY_DIAL_TIMEOUT"`
	LoginTimeout        time.Duration     `help:"Time a database has to complete a login, dial included." default:"30s" env:"RDSPROXY_LOGIN_TIMEOUT"`
	MaxPending          int               `help:"Maximum connections still in their startup phase; at the cap the one waiting longest for its client is evicted." default:"512" env:"RDSPROXY_MAX_PENDING"`
	MaxPendingPerSource int               `help:"Maximum connections in their startup phase from one client IP, evicted the same way (behind SSM all arrive from loopback)." default:"256" env:"RDSPROXY_MAX_PENDING_PER_SOURCE"`
	TCPKeepalive        time.Duration     `name:"tcp-keepalive" help:"TCP keepalive period on client and database connections." default:"30s" env:"RDSPROXY_TCP_KEEPALIVE"`
	MaxStartupSize      int               `help:"Largest startup packet accepted, in bytes." default:"10000" env:"RDSPROXY_MAX_STARTUP_SIZE"`
	DrainTimeout        time.Duration     `help:"On SIGTERM, time running sessions have to finish before they get 57P01." default:"30s" env:"RDSPROXY_DRAIN_TIMEOUT"`
	DryRun              bool              `help:"Check the flags and configuration file, print the effective configuration and exit."`
	IdentityFlags
}

// staticTarget is one entry of the configuration file's targets list.
type staticTarget struct {
	Name      string   `yaml:"name"`
	Endpoint  string   `yaml:"endpoint"`
	Region    string   `yaml:"region"`
	Auth      string   `yaml:"auth"`
	TLS       string   `yaml:"tls"`
	Database  string   `yaml:"database"`
	Users     []string `yaml:"users"`
	ReadOnly  bool     `yaml:"read-only"`
	LocalPort int      `yaml:"local-port"`
	// Principals are ARN globs, as in the rdsproxy:principals tag.
	Principals []string `yaml:"principals"`
}

func (s staticTarget) target() discovery.Target {
	t := discovery.Target{
		Name: s.Name, Endpoint: s.Endpoint, Region: s.Region,
		Auth: discovery.Auth(s.Auth), TLS: discovery.TLSMode(s.TLS),
		Database: s.Database, Users: s.Users, ReadOnly: s.ReadOnly, LocalPort: s.LocalPort,
		Principals: s.Principals, Source: "static",
	}
	if t.Auth == "" {
		t.Auth = discovery.AuthIAM
	}
	if t.TLS == "" {
		t.TLS = discovery.TLSVerifyFull
	}
	return t
}

// Run starts the server and serves until ctx ends.
func (c *ServerCmd) Run(ctx context.Context, g *Globals, log *slog.Logger, env Env) error {
	policy, err := c.policy(string(g.Config))
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	watcher, err := c.watcher(ctx, policy, log)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	cfg, err := c.serverConfig(log, watcher)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if cfg.Identity, err = c.identityConfig(ctx, log); err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	reg, metrics := newRegistry(watcher)
	cfg.Metrics = metrics
	if c.DryRun {
		return c.printEffective(env, policy)
	}
	srv, err := server.New(cfg)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	return c.serve(ctx, srv, watcher, reg, log, func() (discovery.Policy, error) { return reloadPolicy(env) })
}

// reloadPolicy parses the original command line again, so the reloaded
// configuration file takes its usual place between flags, environment and
// defaults, and returns the new tag rules and static targets.
func reloadPolicy(env Env) (discovery.Policy, error) {
	var cli CLI
	parser, err := newParser(&cli, Env{Stdout: io.Discard, Stderr: io.Discard}, func(int) {})
	if err != nil {
		return discovery.Policy{}, err
	}
	if _, err := parser.Parse(env.args); err != nil {
		return discovery.Policy{}, err
	}
	return cli.Server.policy(string(cli.Config))
}

// policy reads the tag rules and the configuration file's static targets.
func (c *ServerCmd) policy(configPath string) (discovery.Policy, error) {
	rules, err := discovery.ParseRules(c.AllowTag, c.DenyTag)
	if err != nil {
		return discovery.Policy{}, err
	}
	static, err := loadStaticTargets(configPath)
	if err != nil {
		return discovery.Policy{}, err
	}
	p := discovery.Policy{Rules: rules, Regions: c.Region, Static: static}
	if err := p.Validate(); err != nil {
		return discovery.Policy{}, err
	}
	return p, nil
}

// watcher builds the discovery watcher: RDS in every --region, plus the
// static targets.
func (c *ServerCmd) watcher(ctx context.Context, p discovery.Policy, log *slog.Logger) (*discovery.Watcher, error) {
	cfg := discovery.WatcherConfig{Policy: p, Interval: c.RefreshInterval, Logger: log}
	if len(c.Region) > 0 {
		awsCfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		src, err := discovery.NewSource(c.Region, func(region string) discovery.RDSAPI {
			rc := awsCfg.Copy()
			rc.Region = region
			return rds.NewFromConfig(rc)
		}, 0)
		if err != nil {
			return nil, err
		}
		cfg.Fetch = src.Fetch
	}
	return discovery.NewWatcher(cfg)
}

func (c *ServerCmd) serve(ctx context.Context, srv *server.Server, w *discovery.Watcher, reg *prometheus.Registry, log *slog.Logger, reload func() (discovery.Policy, error)) error {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	admin, err := net.Listen("tcp", c.AdminAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen admin: %w", err)
	}
	// A failed first refresh is not fatal: the watcher keeps retrying,
	// and readiness stays false until a snapshot is loaded.
	w.Refresh(ctx)
	targets := 0
	if snap := w.Current(); snap != nil {
		targets = snap.Len()
	}
	log.Info("ready", "listen", ln.Addr().String(), "admin", admin.Addr().String(), "targets", targets, "regions", c.Region)
	// The admin listener outlives the drain, so /readyz answers 503 while
	// sessions finish.
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	ready := func() bool { return w.Ready() && !srv.Draining() }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { defer stopAdmin(); return srv.Serve(gctx, ln) })
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error {
		return server.ServeAdmin(adminCtx, admin, server.AdminConfig{Ready: ready, Metrics: reg, Logger: log})
	})
	g.Go(func() error { return reloadOnHUP(gctx, w, reload, log) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

// reloadOnHUP rereads the configuration (tag rules, static targets) on
// SIGHUP and refreshes discovery; running sessions are not touched.
func reloadOnHUP(ctx context.Context, w *discovery.Watcher, reload func() (discovery.Policy, error), log *slog.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		p, err := reload()
		if err == nil {
			err = w.SetConfig(p)
		}
		if err != nil {
			log.Error("configuration reload failed; keeping the previous one", "err", err)
			continue
		}
		log.Info("configuration reloaded", "static_targets", len(p.Static), "allow", ruleStrings(p.Rules.Allow), "deny", ruleStrings(p.Rules.Deny))
		w.Refresh(ctx)
	}
}

func (c *ServerCmd) serverConfig(log *slog.Logger, targets server.Targets) (server.Config, error) {
	cfg := server.Config{
		Targets:             targets,
		DialOverrides:       c.Map,
		MaxSessions:         c.MaxSessions,
		FirstByteTimeout:    c.FirstByteTimeout,
		PasswordTimeout:     c.PasswordTimeout,
		StartupTimeout:      c.StartupTimeout,
		DialTimeout:         c.DialTimeout,
		LoginTimeout:        c.LoginTimeout,
		MaxStartupSize:      c.MaxStartupSize,
		DrainTimeout:        c.DrainTimeout,
		MaxPending:          c.MaxPending,
		KeepAlive:           c.TCPKeepalive,
		MaxPendingPerSource: c.MaxPendingPerSource,
		Logger:              log,
	}
	for endpoint, addr := range c.Map {
		if _, _, err := discovery.SplitEndpoint(endpoint); err != nil {
			return cfg, fmt.Errorf("--map %s=%s: %w", endpoint, addr, err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return cfg, fmt.Errorf("--map %s=%s: address is not host:port", endpoint, addr)
		}
	}
	var extra []byte
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return cfg, fmt.Errorf("--ca-file: %w", err)
		}
		extra = b
	}
	roots, err := server.RootCAs(extra)
	if err != nil {
		return cfg, fmt.Errorf("--ca-file: %w", err)
	}
	cfg.RootCAs = roots
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return cfg, errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return cfg, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		cfg.RequireTLS = !c.AllowPlaintext
	}
	if c.MaxSessions < 1 || c.MaxStartupSize < 8 || c.StartupTimeout <= 0 || c.DialTimeout <= 0 || c.DrainTimeout < 0 ||
		c.MaxPending < 1 || c.MaxPendingPerSource < 1 || c.TCPKeepalive <= 0 ||
		c.FirstByteTimeout <= 0 || c.PasswordTimeout <= 0 || c.LoginTimeout <= 0 {
		return cfg, errors.New("limits and timeouts must be positive")
	}
	if c.DialTimeout > c.LoginTimeout {
		return cfg, fmt.Errorf("--dial-timeout (%s) must not exceed --login-timeout (%s)", c.DialTimeout, c.LoginTimeout)
	}
	return cfg, nil
}

// printEffective writes the configuration the server would run with.
func (c *ServerCmd) printEffective(env Env, p discovery.Policy) error {
	out := map[string]any{
		"listen": c.Listen, "admin-addr": c.AdminAddr, "map": c.Map, "ca-file": c.CAFile,
		"tls-cert": c.TLSCert, "max-sessions": c.MaxSessions, "startup-timeout": c.StartupTimeout.String(),
		"dial-timeout": c.DialTimeout.String(), "login-timeout": c.LoginTimeout.String(),
		"first-byte-timeout": c.FirstByteTimeout.String(), "password-timeout": c.PasswordTimeout.String(),
		"allow-plaintext": c.AllowPlaintext, "max-startup-size": c.MaxStartupSize, "drain-timeout": c.DrainTimeout.String(),
		"max-pending": c.MaxPending, "max-pending-per-source": c.MaxPendingPerSource, "tcp-keepalive": c.TCPKeepalive.String(),
		"region": c.Region, "allow-tag": ruleStrings(p.Rules.Allow), "deny-tag": ruleStrings(p.Rules.Deny),
		"refresh-interval": c.RefreshInterval.String(), "targets": jsonValue(p.Static),
		"require-identity": c.RequireIdentity, "server-id": c.ServerID, "sts-region": c.STSRegion, "sts-endpoint": c.STSEndpoint,
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "# configuration is valid\n%s", b)
	return nil
}

// loadStaticTargets reads the targets list of the configuration file,
// rejecting unknown fields.
func loadStaticTargets(path string) ([]discovery.Target, error) {
	var node yaml.Node
	if err := readFileSection(path, "targets", &node); err != nil {
		return nil, err
	}
	if node.Kind == 0 {
		return nil, nil
	}
	b, err := yaml.Marshal(&node)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	var entries []staticTarget
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("configuration file %s: targets: %w", path, err)
	}
	out := make([]discovery.Target, len(entries))
	for i, e := range entries {
		out[i] = e.target()
	}
	return out, nil
}

func ruleStrings(rules []discovery.Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}

// jsonValue turns v into plain maps and lists with its JSON field names.
func jsonValue(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}
