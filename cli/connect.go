package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
)

// ConnectCmd runs the client proxy.
type ConnectCmd struct {
	Targets []string `arg:"" optional:"" name:"target" help:"Target names (rdsproxy list shows them); none on a terminal offers a picker."`
	TunnelFlags
	Address string `help:"Local address to listen on." default:"127.0.0.1" env:"RDSPROXY_ADDRESS"`
	Port    *int   `help:"Local port (one target only; 0: any free port, not remembered). Default: the target's rdsproxy:local-port tag, else the port it had last time from this server, else a free one." env:"RDSPROXY_PORT"`
	User    string `help:"Database user for the printed connection strings (default: the target's first rdsproxy:users, else the placeholder DBUSER to replace)." env:"RDSPROXY_USER"`
	JSON    bool   `help:"Print the connection details of each target as a JSON line."`
	// LocalTLS serves applications that insist on TLS (sslmode=require,
	// verify-full, JDBC ssl=true).
	// UnixSocket serves libpq clients on a Unix socket as well, which
	// only this user can reach (the directory is 0700); loopback TCP is
	// open to every local user.
	UnixSocket string `name:"unix-socket" help:"Also listen on a Unix socket in this directory (created 0700, so only you can connect): .s.PGSQL.PORT, PORT being the target's TCP port; libpq clients use host=DIR." env:"RDSPROXY_UNIX_SOCKET" placeholder:"DIR"`
	LocalTLS   bool   `name:"local-tls" help:"Accept TLS from local clients, for applications that require it; the certificate chains to a CA kept in the state directory (printed as sslrootcert, for verify-full)." env:"RDSPROXY_LOCAL_TLS"`
}

// Run opens the tunnel, learns the targets, listens and serves.
func (c *ConnectCmd) Run(ctx context.Context, g *Globals, log *slog.Logger, env Env) error {
	if c.Port != nil && len(c.Targets) > 1 {
		return &ExitError{Code: ExitUsage, Err: errors.New("--port works with one target; the others need their own ports")}
	}
	tokens, err := c.tokenSource(ctx)
	if err != nil {
		return err
	}
	r, err := c.dial(ctx, log, env, g.Quiet)
	if err != nil {
		return err
	}
	defer r.Close()
	targets, err := c.chooseTargets(env, r.targets)
	if err != nil {
		return err
	}
	state := newStateStore()
	var localTLSConfig *tls.Config
	var rootCert string
	if c.LocalTLS {
		if localTLSConfig, rootCert, err = localTLS(state.dir(), c.Address, time.Now()); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return c.watchCredentials(gctx, log) })
	for _, t := range targets {
		lns, ci, err := c.listenTarget(t, state, rootCert)
		var p *client.Proxy
		if err == nil {
			p, err = client.New(client.Config{Tunnel: r.tun, Target: t, Tokens: tokens, ServerTLS: r.serverTLS, Striping: r.striping, NoCompression: r.noCompression,
				LocalTLS: localTLSConfig, Identities: r.ids, Server: r.identity, Logger: log})
			if err != nil {
				closeAll(lns)
			}
		}
		if err != nil { // stop the targets already served
			cancel()
			grp.Wait()
			return err
		}
		for _, ln := range lns {
			grp.Go(func() error { return p.Serve(gctx, ln) })
		}
		if c.User != "" && !t.AllowsUser(c.User) { // served anyway: other users may connect
			log.Warn("the rdsproxy server will refuse the printed strings: the target does not serve this database user; pass --user one it serves",
				"target", t.Name, "user", c.User, "served", strings.Join(t.Users, ","))
		}
		c.announce(env, log, state, ci, lns[0].Addr().String())
	}
	warnBeyondLoopback(log, c.Address) // once listening there: an --address that cannot be is an error instead
	return grp.Wait()
}

// listenTarget opens t's listeners: TCP (see listen) and, with
// --unix-socket, a Unix socket on the same port number.
func (c *ConnectCmd) listenTarget(t contract.Target, state *stateStore, rootCert string) ([]net.Listener, connInfo, error) {
	ln, err := c.listen(t, state)
	if err != nil {
		return nil, connInfo{}, &ExitError{Code: ExitFailure, Err: err}
	}
	ci := newConnInfo(t, ln.Addr().(*net.TCPAddr), c.User, rootCert)
	if c.UnixSocket == "" {
		return []net.Listener{ln}, ci, nil
	}
	uln, err := listenUnix(c.UnixSocket, ci.Port)
	if err != nil {
		ln.Close()
		return nil, connInfo{}, &ExitError{Code: ExitFailure, Err: fmt.Errorf("target %s: %w", t.Name, err)}
	}
	ci.Unix = fmt.Sprintf(`psql "host=%s port=%d user=%s dbname=%s"`, conninfoQuote(c.UnixSocket), ci.Port, ci.User, ci.DB)
	return []net.Listener{ln, uln}, ci, nil
}

// announce remembers a served target's connection details for rdsproxy
// env, then prints them and logs the ready line: a script that waits for
// them can run rdsproxy env at once.
func (c *ConnectCmd) announce(env Env, log *slog.Logger, state *stateStore, ci connInfo, listen string) {
	if err := state.rememberServed(c.serverKey(), ci); err != nil {
		log.Debug("cannot remember the connection details for rdsproxy env", "target", ci.Target, "err", err)
	}
	c.printTarget(env, ci)
	log.Info("ready", "target", ci.Target, "listen", listen)
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// chooseTargets resolves the names given, or offers a picker on a terminal.
func (c *ConnectCmd) chooseTargets(env Env, all []contract.Target) ([]contract.Target, error) {
	names := c.Targets
	if len(names) == 0 {
		if !isTerminal(env.Stdin) {
			return nil, &ExitError{Code: ExitUsage, Err: fmt.Errorf("name a target; the server serves: %s", targetNames(all))}
		}
		picked, err := pick(env, all)
		if err != nil {
			return nil, &ExitError{Code: ExitUsage, Err: err}
		}
		names = picked
	}
	out := make([]contract.Target, 0, len(names))
	for _, name := range names {
		t, err := client.FindTarget(all, name)
		if err != nil {
			return nil, &ExitError{Code: ExitFailure, Err: err}
		}
		out = append(out, t)
	}
	return out, nil
}

// pick asks for target numbers on the terminal.
func pick(env Env, all []contract.Target) ([]string, error) {
	if len(all) == 0 {
		return nil, errors.New("the server serves no targets")
	}
	for i, t := range all {
		fmt.Fprintf(env.Stderr, "  %2d) %-24s %s %s\n", i+1, t.Name, t.Region, t.Role)
	}
	fmt.Fprint(env.Stderr, "Targets to serve (numbers, space-separated): ")
	line, err := bufio.NewReader(env.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return nil, fmt.Errorf("no target chosen: %w", err)
	}
	var names []string
	for _, f := range strings.Fields(line) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > len(all) {
			return nil, fmt.Errorf("%q is not a number between 1 and %d", f, len(all))
		}
		names = append(names, all[n-1].Name)
	}
	if len(names) == 0 {
		return nil, errors.New("no target chosen")
	}
	return names, nil
}

func targetNames(all []contract.Target) string {
	names := make([]string, len(all))
	for i, t := range all {
		names[i] = t.Name
	}
	return strings.Join(names, ", ")
}

// listen opens the local listener for t on a stable port (see
// localPort), remembered for next time unless --port 0 asked for any free
// one. A chosen port that is busy is an error, never a silent change.
func (c *ConnectCmd) listen(t contract.Target, state *stateStore) (net.Listener, error) {
	server := c.serverKey()
	port, why := c.localPort(t, state, server)
	addr := net.JoinHostPort(c.Address, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, c.listenError(t, addr, port, why, err)
	}
	if c.Port == nil || *c.Port != 0 {
		state.rememberPort(server, t.Name, ln.Addr().(*net.TCPAddr).Port)
	}
	return ln, nil
}

// listenError says why t could not listen on addr, the port chosen for
// why: an --address this machine does not have needs another; a port of
// one's own that is busy needs freeing or another --port; one below 1024
// needs privileges.
func (c *ConnectCmd) listenError(t contract.Target, addr string, port int, why string, err error) error {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, errAddrNotAvail):
		return fmt.Errorf("target %s cannot listen on %s: --address %s is not an address of this machine; pass one it has (the default is 127.0.0.1): %w", t.Name, addr, c.Address, err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("target %s cannot listen on %s: --address %s does not resolve; pass an IP address of this machine: %w", t.Name, addr, c.Address, err)
	case port == 0:
		return fmt.Errorf("listen for target %s on %s: %w", t.Name, addr, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("target %s may not listen on %s (%s): ports below 1024 need privileges; pass --port above 1023: %w", t.Name, addr, why, err)
	}
	advice := "free it or pass --port"
	if c.Port != nil {
		advice = "free it or pass another --port"
	}
	return fmt.Errorf("target %s listens on %s (%s), which is busy: %s: %w", t.Name, addr, why, advice, err)
}

// localPort is the port t is served on and why: --port, else the
// target's rdsproxy:local-port tag, else the port it was served on last
// time from the same server, else 0 (a free port).
func (c *ConnectCmd) localPort(t contract.Target, state *stateStore, server string) (int, string) {
	switch {
	case c.Port != nil:
		return *c.Port, "--port"
	case t.LocalPort != 0:
		return t.LocalPort, "its rdsproxy:local-port tag"
	}
	if port := state.port(server, t.Name); port != 0 {
		return port, "the port it had last time"
	}
	return 0, "a free port"
}

// connInfo is what a user pastes into psql, an application or a GUI.
type connInfo struct {
	Target string `json:"target"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
	User   string `json:"user"`
	DB     string `json:"database"`
	// SSLMode and SSLRootCert are libpq's sslmode and sslrootcert.
	SSLMode     string `json:"sslmode"`
	SSLRootCert string `json:"sslrootcert,omitempty"`
	Psql        string `json:"psql"`
	DSN         string `json:"dsn"`
	JDBC        string `json:"jdbc"`
	Unix        string `json:"unix,omitempty"` // psql over --unix-socket
}

// addr is the TCP address a client dials.
func (ci connInfo) addr() string { return net.JoinHostPort(ci.Host, strconv.Itoa(ci.Port)) }

// newConnInfo builds the connection strings; with rootCert (--local-tls)
// they ask for TLS verified against it, else for a plaintext loopback hop.
func newConnInfo(t contract.Target, addr *net.TCPAddr, user, rootCert string) connInfo {
	if user == "" && len(t.Users) > 0 {
		user = t.Users[0]
	}
	if user == "" {
		user = "DBUSER"
	}
	db := databaseOf(t)
	host, port := dialHost(addr.IP), addr.Port
	hostPort := net.JoinHostPort(host, strconv.Itoa(port)) // [::1]:5432 in URLs
	ssl, sslQuery := "sslmode=disable", "sslmode=disable"
	if rootCert != "" {
		ssl = "sslmode=verify-full sslrootcert=" + conninfoQuote(rootCert)
		sslQuery = "sslmode=verify-full&sslrootcert=" + url.QueryEscape(rootCert)
	}
	mode := "disable"
	if rootCert != "" {
		mode = "verify-full"
	}
	return connInfo{
		Target: t.Name, Host: host, Port: port, User: user, DB: db, SSLMode: mode, SSLRootCert: rootCert,
		Psql: fmt.Sprintf(`psql "host=%s port=%d user=%s dbname=%s %s"`, host, port, user, db, ssl),
		DSN:  fmt.Sprintf("postgresql://%s@%s/%s?%s", user, hostPort, db, sslQuery),
		JDBC: fmt.Sprintf("jdbc:postgresql://%s/%s?%s&user=%s", hostPort, db, sslQuery, user),
	}
}

// databaseOf is the database a client logs in to: the target's, else
// postgres, the database every RDS instance has.
func databaseOf(t contract.Target) string {
	if t.Database == "" {
		return "postgres"
	}
	return t.Database
}

// dialHost is the host a local client dials for a listener on ip:
// 127.0.0.1 when it listens on all addresses (Go's wildcard listeners
// take IPv4 too, and ::1 fails where IPv6 is off).
func dialHost(ip net.IP) string {
	if ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return ip.String()
}

// warnBeyondLoopback says that an --address other than loopback lets
// other machines log in as you: connect adds your IAM identity to any
// connection that reaches it.
func warnBeyondLoopback(log *slog.Logger, address string) {
	if isLoopback(address) {
		return
	}
	log.Warn("--address is not a loopback address: anyone who can reach it logs in to the databases with your AWS identity; "+
		"keep the default 127.0.0.1 unless that is what you mean, and then let a firewall decide who reaches it", "address", address)
}

// isLoopback reports whether host (an IP address or a name) is this
// machine's loopback.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return (ip != nil && ip.IsLoopback()) || host == "localhost"
}

// conninfoQuote quotes a libpq keyword value when it needs it.
func conninfoQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// printTarget prints ready-to-paste connection strings.
func (c *ConnectCmd) printTarget(env Env, ci connInfo) {
	if c.JSON {
		json.NewEncoder(env.Stdout).Encode(ci)
		return
	}
	fmt.Fprintf(env.Stdout, "%s → %s\n  psql:  %s\n", ci.Target, net.JoinHostPort(ci.Host, strconv.Itoa(ci.Port)), ci.Psql)
	if ci.Unix != "" {
		fmt.Fprintf(env.Stdout, "  unix:  %s\n", ci.Unix)
	}
	fmt.Fprintf(env.Stdout, "  DSN:   %s\n  JDBC:  %s\n", ci.DSN, ci.JDBC)
}
