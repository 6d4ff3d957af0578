package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/rds"
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
	PasswordTimeout     time.Duration     `help:"Time a client has to send its IAM token once asked for it, or a passthrough client each answer to its database's password request." default:"5s" env:"RDSPROXY_PASSWORD_TIMEOUT"`
	StartupTimeout      time.Duration     `help:"Time a client has to complete its whole startup, TLS included." default:"10s" env:"RDSPROXY_STARTUP_TIMEOUT"`
	DialTimeout         time.Duration     `help:"Time to connect to a database and negotiate TLS." default:"10s" env:"RDSPROXY_DIAL_TIMEOUT"`
	LoginTimeout        time.Duration     `help:"Time a database has to complete a login, dial included." default:"30s" env:"RDSPROXY_LOGIN_TIMEOUT"`
	MaxPending          int               `help:"Maximum connections still in their startup phase; at the cap the one waiting longest for its client is evicted." default:"512" env:"RDSPROXY_MAX_PENDING"`
	MaxPendingPerSource int               `help:"Maximum connections in their startup phase from one client IP, evicted the same way (behind SSM all arrive from loopback)." default:"256" env:"RDSPROXY_MAX_PENDING_PER_SOURCE"`
	TCPKeepalive        time.Duration     `name:"tcp-keepalive" help:"TCP keepalive period on client and database connections." default:"30s" env:"RDSPROXY_TCP_KEEPALIVE"`
	MaxStartupSize      int               `help:"Largest startup packet accepted, in bytes." default:"10000" env:"RDSPROXY_MAX_STARTUP_SIZE"`
	DrainTimeout        time.Duration     `help:"On SIGTERM, time running sessions have to finish before they get 57P01." default:"30s" env:"RDSPROXY_DRAIN_TIMEOUT"`
	RevokeSessions      bool              `help:"End running sessions (FATAL 57P01) once a refresh or reload finds that the tag rules, rdsproxy:users or rdsproxy:principals no longer admit them; without it, as with pg_hba.conf and IAM, a change applies to new sessions only." env:"RDSPROXY_REVOKE_SESSIONS"`
	Striping            bool              `help:"Take clients' offers to stripe a connection over several SSM sessions and compress it; --no-striping keeps every connection one raw stream." default:"true" negatable:"" env:"RDSPROXY_STRIPING"`
	MaxStripes          int               `help:"Most stripes one striped connection may spread over (each holds up to 128 KiB queued; each connection up to 2 MiB received and not yet relayed)." default:"16" env:"RDSPROXY_MAX_STRIPES"`
	DryRun              bool              `help:"Check the flags and configuration file, print the effective configuration and exit."`
	IdentityFlags

	cert *serverCert // with --tls-cert: set by serverConfig, read again on SIGHUP
}

// staticTarget is one entry of the configuration file's targets list;
// the file spells its keys like the flags.
type staticTarget struct {
	Name      string   `yaml:"name"`
	Endpoint  string   `yaml:"endpoint"`
	Region    string   `yaml:"region,omitempty"`
	Auth      string   `yaml:"auth,omitempty"`
	TLS       string   `yaml:"tls,omitempty"`
	Database  string   `yaml:"database,omitempty"`
	Users     []string `yaml:"users,omitempty"`
	ReadOnly  bool     `yaml:"read-only,omitempty"`
	LocalPort int      `yaml:"local-port,omitempty"`
	// Principals are ARN globs, as in the rdsproxy:principals tag.
	Principals []string `yaml:"principals,omitempty"`
}

func (s staticTarget) target() discovery.Target {
	return discovery.Static(discovery.Target{
		Name: s.Name, Endpoint: s.Endpoint, Region: s.Region,
		Auth: discovery.Auth(s.Auth), TLS: discovery.TLSMode(s.TLS),
		Database: s.Database, Users: s.Users, ReadOnly: s.ReadOnly, LocalPort: s.LocalPort,
		Principals: s.Principals,
	})
}

func fileTarget(t discovery.Target) staticTarget {
	return staticTarget{Name: t.Name, Endpoint: t.Endpoint, Region: t.Region, Auth: string(t.Auth), TLS: string(t.TLS),
		Database: t.Database, Users: t.Users, ReadOnly: t.ReadOnly, LocalPort: t.LocalPort, Principals: t.Principals}
}

// Run starts the server and serves until ctx ends.
func (c *ServerCmd) Run(ctx context.Context, kctx *kong.Context, g *Globals, log *slog.Logger, env Env) error {
	// A SIGHUP is a reload, also one sent while the server starts (a
	// certificate renewal's hook): Run has held it since the process began.
	hup := env.signals.takeHangups()
	if err := positiveFlags(kctx); err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if _, port, _ := net.SplitHostPort(c.Listen); c.Listen == c.AdminAddr && port != "0" { // port 0: a free port each
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--listen and --admin-addr are both %s; give each its own address", c.Listen)}
	}
	policy, err := c.policy(g.Config.path())
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	watcher, err := c.watcher(ctx, policy, log)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: flagError(err)}
	}
	cfg, err := c.serverConfig(ctx, log)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if cfg.Audit, err = newLogger(env.stderr, "info", g.LogFormat); err != nil { // whatever --log-level says
		return &ExitError{Code: ExitUsage, Err: err}
	}
	cfg.Targets = watcher
	if err := cfg.Validate(); err != nil {
		return &ExitError{Code: ExitUsage, Err: flagError(err)}
	}
	c.warnPlaintext(log)
	c.warnOvershadowed(log)
	if c.DryRun {
		return printEffective(env, kctx, policy, cfg)
	}
	reg, metrics := server.NewRegistry(watcher.Status)
	cfg.Metrics = metrics
	srv, err := server.New(cfg)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: flagError(err)}
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return listenError("listen", c.Listen, err)
	}
	admin, err := net.Listen("tcp", c.AdminAddr)
	if err != nil {
		ln.Close()
		return listenError("admin-addr", c.AdminAddr, err)
	}
	log.Info("discovery", "regions", c.Region, "allow", allowStrings(policy.Rules), "deny", ruleStrings(policy.Rules.Deny),
		"static_targets", len(policy.Static))
	if len(policy.Regions) == 0 && len(policy.Static) == 0 {
		log.Warn("nothing to serve: no --region to discover databases in and no targets in the configuration file; " +
			"pass --region (region: in the file), or add targets:")
	}
	inst := server.Instance{Server: srv, Watcher: watcher, Listener: ln, Admin: admin, Metrics: reg, Logger: log}
	gr, gctx := errgroup.WithContext(ctx)
	// Reloads end with the instance, after its drain: a reload during the
	// drain still revokes (--revoke-sessions) and renews the certificate.
	hupCtx, stopHUP := context.WithCancel(context.WithoutCancel(gctx))
	served := make(chan struct{})
	gr.Go(func() error { defer close(served); defer stopHUP(); return inst.Run(gctx) })
	gr.Go(func() error { // a second SIGTERM or Ctrl-C ends the drain at once
		select {
		case <-env.signals.Again():
			log.Warn("second signal: ending the drain now")
			srv.EndDrain()
		case <-served:
		}
		return nil
	})
	running := effectiveFlags(kctx)
	gr.Go(func() error {
		return reloadOnHUP(hupCtx, hup, watcher, func() (discovery.Policy, []string, error) {
			p, restart, err := reloadPolicy(env, running)
			p.Regions = c.Region // the RDS clients are the running regions' until a restart (restart names a change)
			return p, restart, err
		}, c.cert, log)
	})
	return gr.Wait()
}

// listenError names the flag whose address could not be listened on,
// without net.OpError's repetition of it ("listen tcp ADDR: bind: ...").
func listenError(flag, addr string, err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	return fmt.Errorf("--%s %s: %w", flag, addr, err)
}

// warnPlaintext warns of settings that leave clients' traffic in the
// clear where the operator may not expect it.
func (c *ServerCmd) warnPlaintext(log *slog.Logger) {
	if c.TLSCert != "" {
		return
	}
	if c.AllowPlaintext {
		log.Warn("--allow-plaintext does nothing without --tls-cert: without a certificate every client connects in plaintext")
	}
	if host, _, _ := net.SplitHostPort(c.Listen); !isLoopback(host) {
		log.Warn("--listen is not a loopback address and there is no --tls-cert: IAM tokens and query results cross the network in plaintext; "+
			"add --tls-cert and --tls-key, or keep 127.0.0.1, where SSM and kubectl port-forward reach the server", "listen", c.Listen)
	}
}

// warnOvershadowed warns of limits that another one makes moot: they are
// accepted (each is valid alone, and the other may be a default), but the
// operator who set them expects an effect they cannot have.
func (c *ServerCmd) warnOvershadowed(log *slog.Logger) {
	for _, w := range []struct {
		flag  string
		value time.Duration
	}{{"first-byte-timeout", c.FirstByteTimeout}, {"password-timeout", c.PasswordTimeout}} {
		if w.value > c.StartupTimeout {
			log.Warn(fmt.Sprintf("--%s (%s) is longer than --startup-timeout (%s), which bounds the whole startup: a client gets at most the latter",
				w.flag, w.value, c.StartupTimeout))
		}
	}
	if c.MaxPendingPerSource > c.MaxPending {
		log.Warn(fmt.Sprintf("--max-pending-per-source (%d) is more than --max-pending (%d): one client address can fill every pending slot; "+
			"set it lower than --max-pending (behind SSM or kubectl every client shares one address)", c.MaxPendingPerSource, c.MaxPending))
	}
}

// reloadable are the flags a reload applies; the others take effect
// only after a restart.
var reloadable = []string{"allow-tag", "deny-tag"}

// reloadPolicy parses the original command line again, so the reloaded
// configuration file takes its usual place between flags, environment and
// defaults, and returns the new tag rules and static targets, and the
// flags whose values now differ from running's but need a restart.
func reloadPolicy(env Env, running map[string]any) (discovery.Policy, []string, error) {
	var cli CLI
	parser, err := newParser(&cli, Env{Stdout: io.Discard, Stderr: io.Discard}, func(int) {})
	if err != nil {
		return discovery.Policy{}, nil, err
	}
	kctx, err := parser.Parse(env.args)
	if err != nil {
		return discovery.Policy{}, nil, err
	}
	p, err := cli.Server.policy(cli.Config.path())
	return p, needRestart(running, effectiveFlags(kctx)), err
}

// needRestart names the flags, in order, whose values differ between was
// and now and that a reload does not apply.
func needRestart(was, now map[string]any) []string {
	keys := maps.Clone(now)
	maps.Copy(keys, was)
	var changed []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if !slices.Contains(reloadable, k) && !reflect.DeepEqual(was[k], now[k]) {
			changed = append(changed, k)
		}
	}
	return changed
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

// reloadOnHUP rereads the configuration (tag rules, static
// targets) and the TLS certificate files on each SIGHUP from hup and refreshes
// discovery (running sessions go on unless --revoke-sessions, which the
// server applies to each new snapshot). Other settings that changed
// are named in a warning: they take effect only after a restart.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, w *discovery.Watcher, reload func() (discovery.Policy, []string, error), cert *serverCert, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		cert.reload(log)
		p, restart, err := reload()
		if err == nil {
			err = w.SetConfig(p)
		}
		if err != nil {
			log.Error("configuration reload failed; keeping the previous one", "err", err)
			continue
		}
		log.Info("configuration reloaded", "static_targets", len(p.Static), "allow", allowStrings(p.Rules), "deny", ruleStrings(p.Rules.Deny))
		if len(restart) > 0 {
			log.Warn("changed settings that a reload does not apply; they take effect after a restart", "settings", restart)
		}
		w.Refresh(ctx)
	}
}

// serverConfig turns the flags into the server's configuration, reading
// the files they name. The server validates it.
func (c *ServerCmd) serverConfig(ctx context.Context, log *slog.Logger) (server.Config, error) {
	cfg := server.Config{
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
		NoStriping:          !c.Striping,
		RevokeSessions:      c.RevokeSessions,
		MaxStripes:          c.MaxStripes,
		Logger:              log,
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
		c.cert = &serverCert{certFile: c.TLSCert, keyFile: c.TLSKey}
		if err := c.cert.load(); err != nil {
			return cfg, err
		}
		c.cert.warnIfNotCurrent(log, time.Now())
		cfg.ClientTLS = &tls.Config{GetCertificate: c.cert.get, MinVersion: tls.VersionTLS12}
		cfg.RequireTLS = !c.AllowPlaintext
	}
	cfg.Identity, err = c.identityConfig(ctx, log)
	return cfg, err
}

// configFlags names the flag behind each server.Config and
// discovery.WatcherConfig field the server command sets.
var configFlags = map[string]string{
	"DialOverrides": "map", "RootCAs": "ca-file", "ClientTLS": "tls-cert", "RequireTLS": "tls-cert",
	"MaxSessions": "max-sessions", "MaxPending": "max-pending", "MaxPendingPerSource": "max-pending-per-source",
	"FirstByteTimeout": "first-byte-timeout", "PasswordTimeout": "password-timeout", "StartupTimeout": "startup-timeout",
	"DialTimeout": "dial-timeout", "LoginTimeout": "login-timeout", "MaxStartupSize": "max-startup-size",
	"DrainTimeout": "drain-timeout", "KeepAlive": "tcp-keepalive", "MaxStripes": "max-stripes", "Identity.ServerID": "server-id",
	"Identity.Region": "sts-region", "Identity.Endpoint": "sts-endpoint", "Interval": "refresh-interval",
}

// flagError names the flag behind a configuration error of the server or
// discovery; other errors pass unchanged.
func flagError(err error) error {
	var field, problem string
	var se *server.ConfigError
	var de *discovery.ConfigError
	switch {
	case errors.As(err, &se):
		field, problem = se.Field, se.Problem
	case errors.As(err, &de):
		field, problem = de.Field, de.Problem
	}
	if flag, ok := configFlags[field]; ok {
		return fmt.Errorf("--%s: %s", flag, problem)
	}
	return err
}

// positiveFlags rejects a 0 given for a number or duration flag whose
// default is not 0: the libraries read a zero as "the default", which is
// not what someone who wrote 0 meant.
func positiveFlags(kctx *kong.Context) error {
	for _, f := range kctx.Flags() {
		if f.Default == "" || f.Default == "0" {
			continue
		}
		switch v := kctx.FlagValue(f).(type) {
		case int:
			if v <= 0 {
				return fmt.Errorf("--%s must be positive, not %d", f.Name, v)
			}
		case time.Duration:
			if v <= 0 {
				return fmt.Errorf("--%s must be positive, not %s", f.Name, v)
			}
		}
	}
	return nil
}

// printEffective writes the configuration the server would run with, as
// a configuration file the server accepts: every flag of the command
// that has a value, keyed by its long name, the values the server
// computes when a flag is not given (the default allow rule, the server
// id from the host name, the STS region), and the static targets.
func printEffective(env Env, kctx *kong.Context, p discovery.Policy, cfg server.Config) error {
	out := effectiveFlags(kctx)
	out["allow-tag"] = allowStrings(p.Rules)
	if cfg.Identity != nil {
		out["server-id"] = cfg.Identity.ServerID
		out["sts-region"] = cfg.Identity.Region
	}
	if len(p.Static) > 0 {
		targets := make([]staticTarget, len(p.Static))
		for i, t := range p.Static {
			targets[i] = fileTarget(t)
		}
		out["targets"] = targets
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "# configuration is valid\n%s", b)
	return nil
}

// effectiveFlags is every flag of the command that has a value, keyed by
// its long name, as a configuration file spells it.
func effectiveFlags(kctx *kong.Context) map[string]any {
	out := map[string]any{}
	for _, f := range kctx.Flags() {
		if f.Hidden || slices.Contains([]string{"help", "version", "config", "dry-run"}, f.Name) {
			continue
		}
		v := reflect.ValueOf(kctx.FlagValue(f))
		switch {
		case !v.IsValid():
		case (v.Kind() == reflect.String || v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0:
		case v.Type() == reflect.TypeFor[time.Duration]():
			out[f.Name] = v.Interface().(time.Duration).String()
		default:
			out[f.Name] = v.Interface()
		}
	}
	return out
}

// loadStaticTargets reads the targets list of the configuration file,
// rejecting unknown fields. It decodes the whole file, so that yaml's
// line numbers in an error are the file's own.
func loadStaticTargets(path string) ([]discovery.Target, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Targets []staticTarget       `yaml:"targets"`
		Rest    map[string]yaml.Node `yaml:",inline"` // the other keys: the flags' (a target's unknown keys stay errors)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, fmt.Errorf("configuration file %s: targets: %w", path, targetsError(err))
	}
	out := make([]discovery.Target, len(doc.Targets))
	for i, e := range doc.Targets {
		out[i] = e.target()
	}
	return out, nil
}

// targetsError says what is wrong with the targets list in the file's
// terms (its keys, lists and values) rather than in Go's types.
func targetsError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	keys := strings.Join(yamlKeys(reflect.TypeFor[staticTarget]()), ", ")
	words := strings.NewReplacer( // at each place, the first that matches
		"cannot unmarshal ", "found ",
		" into int", ", want a number", " into bool", ", want true or false", " into string", ", want one value",
		" into []string", ", want a list", " into ", ", want ",
		"[]cli.staticTarget", "a list of targets (each entry starting with - name:)",
		"cli.staticTarget", "a target (keys: "+keys+")",
		"!!map", "a map", "!!seq", "a list", "!!str", "the text", "!!int", "the number", "!!float", "the number", "!!bool", "true or false")
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		if at, field, ok := unknownTargetKey(e); ok {
			msgs[i] = fmt.Sprintf("%s: unknown key %s in a target (keys: %s)", at, field, keys)
			continue
		}
		msgs[i] = words.Replace(e)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// unknownTargetKey reads yaml's "line N: field F not found in type T".
func unknownTargetKey(msg string) (line, field string, ok bool) {
	line, rest, ok := strings.Cut(msg, ": field ")
	if !ok {
		return "", "", false
	}
	field, _, ok = strings.Cut(rest, " not found in type ")
	return line, field, ok
}

// yamlKeys are the keys a struct's yaml tags name.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// allowStrings is the allow rules in force: the default one when none is
// configured, so that a log line never says allow=[] while it applies.
func allowStrings(r discovery.Rules) []string {
	if len(r.Allow) == 0 {
		return []string{discovery.DefaultAllow().String()}
	}
	return ruleStrings(r.Allow)
}

func ruleStrings(rules []discovery.Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}
