package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/rdsproxy/rdsproxy/client"
)

// PsqlCmd runs psql against a target through a tunnel that lives as long
// as psql does.
type PsqlCmd struct {
	Target string   `arg:"" name:"target" help:"Target name."`
	Args   []string `arg:"" optional:"" passthrough:"" name:"psql-args" help:"Arguments for psql, after --."`
	TunnelFlags
	User string `help:"Database user (default: the target's first rdsproxy:users, else $USER)." env:"RDSPROXY_USER"`
}

// Run opens the tunnel, serves the target on a private Unix socket (see
// psqlListener), runs psql with PGHOST/PGPORT/PGUSER/PGDATABASE set, closes everything when
// psql exits, and exits with psql's exit code.
func (c *PsqlCmd) Run(ctx context.Context, kctx *kong.Context, g *Globals, log *slog.Logger, env Env) error {
	args, _ := psqlArgs(c.Args, kctx.Args) // Validate has checked them
	psql, err := exec.LookPath("psql")
	if err != nil { // before any tunnel is opened
		return &ExitError{Code: ExitFailure, Err: errors.New("psql is not installed (not on PATH): install the PostgreSQL client " +
			"(Debian: apt-get install postgresql-client; macOS: brew install libpq), or run rdsproxy connect and use another client")}
	}
	tokens, err := c.tokenSource(ctx)
	if err != nil {
		return err
	}
	r, t, err := c.dialTarget(ctx, log, env, g.Quiet, c.Target)
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := client.New(client.Config{Tunnel: r.tun, Target: t, Tokens: tokens, ServerTLS: r.serverTLS, Striping: r.striping, NoCompression: r.noCompression,
		Identities: r.ids, Server: r.identity, Logger: log})
	if err != nil {
		return err
	}
	ln, host, port, cleanup, err := psqlListener()
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	defer cleanup()
	defer serveLocal(ctx, p, ln).end()
	info := newConnInfo(t, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, userFor(c.User, t.Users), "")
	info.Host = host
	return runPsql(ctx, env, psql, info, args)
}

// Validate refuses psql's arguments given without -- (see psqlArgs), with
// the usage, before anything is dialled.
func (c *PsqlCmd) Validate(kctx *kong.Context) error {
	if _, err := psqlArgs(c.Args, kctx.Args); err != nil {
		return err
	}
	return c.TunnelFlags.Validate()
}

// psqlArgs is what goes to psql: what follows the --. Without one, the
// parser has already taken psql's arguments apart (-v and -q are flags of
// rdsproxy too, and -Atc turned into "A" "tc"), so they are refused with
// the way to write them rather than passed on changed.
func psqlArgs(parsed, raw []string) ([]string, error) {
	switch {
	case len(parsed) == 0:
		return nil, nil
	case parsed[0] == "--": // kong keeps the separator right after the target
		return parsed[1:], nil
	case slices.Contains(raw, "--"): // a -- before the target ends rdsproxy's flags there
		return parsed, nil
	}
	return nil, errors.New("arguments for psql go after --, as in: rdsproxy psql TARGET -- -v ON_ERROR_STOP=1 -c 'SELECT 1' " +
		"(without it, rdsproxy reads -v and -q as its own flags)")
}

// localServing is a client.Proxy serving one command's own client (psql,
// doctor's test login) on its listener.
type localServing struct {
	ln     net.Listener
	stop   context.CancelFunc
	served chan struct{}
}

// endGrace bounds how long end waits for connections to finish by
// themselves.
const endGrace = 3 * time.Second

func serveLocal(ctx context.Context, p *client.Proxy, ln net.Listener) *localServing {
	sctx, stop := context.WithCancel(ctx)
	s := &localServing{ln: ln, stop: stop, served: make(chan struct{})}
	go func() { defer close(s.served); p.Serve(sctx, ln) }()
	return s
}

// end stops accepting, then gives the connections still open endGrace to
// end by themselves before ending them. The client has usually just said
// goodbye, and its session ends cleanly once the server has read that;
// ending it at once raced the goodbye, so the server audited an aborted
// session and connect warned of statements to cancel.
func (s *localServing) end() {
	s.ln.Close()
	t := time.NewTimer(endGrace)
	defer t.Stop()
	select {
	case <-s.served:
	case <-t.C:
	}
	s.stop()
	<-s.served
}

// psqlListener is where rdsproxy psql serves its psql: a Unix socket in
// a new directory only this user can enter, so no other local user can log
// in as you through it while psql runs, as they could through a loopback
// TCP port; loopback TCP on Windows. cleanup removes the directory.
func psqlListener() (ln net.Listener, host string, port int, cleanup func(), err error) {
	if runtime.GOOS == "windows" {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, "", 0, nil, fmt.Errorf("listen for psql: %w", err)
		}
		return ln, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "rdsproxy-psql-")
	if err != nil {
		return nil, "", 0, nil, fmt.Errorf("listen for psql: %w", err)
	}
	const port5432 = 5432 // only names the socket file
	if ln, err = listenUnix(dir, port5432); err != nil {
		os.RemoveAll(dir)
		return nil, "", 0, nil, fmt.Errorf("listen for psql: %w", err)
	}
	return ln, dir, port5432, func() { os.RemoveAll(dir) }, nil
}

// runPsql runs psql in the foreground until it exits. Ctrl-C belongs to
// psql meanwhile (it cancels the running query); a SIGTERM to rdsproxy is
// passed on. psql's exit status becomes rdsproxy's.
func runPsql(ctx context.Context, env Env, psql string, info connInfo, args []string) error {
	cmd := exec.CommandContext(ctx, psql, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "PGHOST="+info.Host, "PGPORT="+strconv.Itoa(info.Port),
		"PGUSER="+info.User, "PGDATABASE="+info.DB, "PGSSLMODE=disable")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	restore := env.signals.leaveInterruptToChild()
	err := cmd.Run()
	restore()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return &ExitError{Code: exitCode(exit)}
	default:
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("run psql: %w", err)}
	}
}

// exitCode is a child's exit status as a shell reports it: 128+N for
// death by signal N.
func exitCode(exit *exec.ExitError) int {
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return exit.ExitCode()
}

func userFor(flag string, users []string) string {
	switch {
	case flag != "":
		return flag
	case len(users) > 0:
		return users[0]
	}
	return os.Getenv("USER")
}

// TokenCmd prints an IAM token for a target.
type TokenCmd struct {
	Target string `arg:"" name:"target" help:"Target name."`
	TunnelFlags
	User string `help:"Database user the token is for (default: the target's first rdsproxy:users, else $USER)." env:"RDSPROXY_USER"`
}

// Run learns the target's endpoint and region from the server and signs
// a token with the local AWS identity.
func (c *TokenCmd) Run(ctx context.Context, g *Globals, log *slog.Logger, env Env) error {
	tokens, err := c.tokenSource(ctx)
	if err != nil {
		return err
	}
	r, t, err := c.dialTarget(ctx, log, env, g.Quiet, c.Target)
	if err != nil {
		return err
	}
	defer r.Close()
	user := userFor(c.User, t.Users)
	if !t.AllowsUser(user) { // signed anyway: RDS itself may take it
		log.Warn("the rdsproxy server will refuse this token: the target does not serve this database user",
			"target", t.Name, "user", user, "served", strings.Join(t.Users, ","))
	}
	tok, err := tokens.Get(ctx, t.Endpoint, t.Region, user)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("sign a token: %w", err)}
	}
	fmt.Fprintln(env.Stdout, tok)
	return nil
}
