package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// ConnectCmd runs the client proxy.
type ConnectCmd struct {
	Targets []string `arg:"" name:"target" help:"Target names (rdsproxy list shows them)."`
	TunnelFlags
	Address string `help:"Local address to listen on." default:"127.0.0.1" env:"RDSPROXY_ADDRESS"`
	Port    int    `help:"Local port (one target only; default: the target's rdsproxy:local-port tag, else a free port)." env:"RDSPROXY_PORT"`
	User    string `help:"Database user shown in the printed connection strings." env:"RDSPROXY_USER"`
}

// Run opens the tunnel, learns the targets, listens and serves.
func (c *ConnectCmd) Run(ctx context.Context, log *slog.Logger, env Env) error {
	if c.Port != 0 && len(c.Targets) > 1 {
		return &ExitError{Code: ExitUsage, Err: errors.New("--port works with one target; the others need their own ports")}
	}
	tun, serverTLS, err := c.TunnelFlags.open(ctx, log)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	defer tun.Close()
	tokens, err := c.tokenSource(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	all, err := client.FetchTargets(fctx, tun, serverTLS)
	cancel()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, name := range c.Targets {
		t, err := client.FindTarget(all, name)
		if err != nil {
			return &ExitError{Code: ExitFailure, Err: err}
		}
		ln, err := c.listen(t)
		if err != nil {
			return err
		}
		p, err := client.New(client.Config{Tunnel: tun, Target: t, Tokens: tokens, ServerTLS: serverTLS, Logger: log})
		if err != nil {
			ln.Close()
			return err
		}
		c.printTarget(env, t, ln.Addr().(*net.TCPAddr))
		log.Info("ready", "target", t.Name, "listen", ln.Addr().String())
		g.Go(func() error { return p.Serve(gctx, ln) })
	}
	return g.Wait()
}

func (c *ConnectCmd) tokenSource(ctx context.Context) (*iamtoken.Cache, error) {
	awsCfg, err := c.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	creds := awsCfg.Credentials
	if creds == nil {
		creds = aws.AnonymousCredentials{}
	}
	build := func(ctx context.Context, endpoint, region, user string) (string, error) {
		return iamtoken.Build(ctx, endpoint, region, user, creds)
	}
	return iamtoken.NewCache(build, time.Now), nil
}

// listen opens the local listener for t: --port, else the target's port
// hint, else any free port.
func (c *ConnectCmd) listen(t discovery.Target) (net.Listener, error) {
	port := c.Port
	if port == 0 {
		port = t.LocalPort
	}
	addr := net.JoinHostPort(c.Address, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for target %s on %s: %w", t.Name, addr, err)
	}
	return ln, nil
}

// printTarget prints ready-to-paste connection strings for t.
func (c *ConnectCmd) printTarget(env Env, t discovery.Target, addr *net.TCPAddr) {
	user := c.User
	if user == "" && len(t.Users) > 0 {
		user = t.Users[0]
	}
	if user == "" {
		user = "DBUSER"
	}
	db := t.Database
	if db == "" {
		db = "postgres"
	}
	host, port := addr.IP.String(), addr.Port
	fmt.Fprintf(env.Stdout, "%s → %s:%d\n", t.Name, host, port)
	fmt.Fprintf(env.Stdout, "  psql:  psql \"host=%s port=%d user=%s dbname=%s sslmode=disable\"\n", host, port, user, db)
	fmt.Fprintf(env.Stdout, "  DSN:   postgresql://%s@%s:%d/%s?sslmode=disable\n", user, host, port, db)
	fmt.Fprintf(env.Stdout, "  JDBC:  jdbc:postgresql://%s:%d/%s?sslmode=disable&user=%s\n", host, port, db, user)
}
