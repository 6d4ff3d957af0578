// Command demo runs rdsproxy on the local sandbox: PostgreSQL behind the
// RDS IAM emulator, moto holding RDS instances and an Aurora cluster with
// tags, the real rdsproxy server discovering them, and rdsproxy connect in
// front. It writes a client configuration and an env file for the
// sandbox, runs one query with psql, prints what to paste, and serves
// until Ctrl-C, then stops everything it started. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

func main() {
	os.Exit(interruptible(func(ctx context.Context) error { return run(ctx, "bin/rdsproxy", os.Stdout) }))
}

// interruptible runs f in the terminal's foreground (see foreground) until
// it returns or SIGINT or SIGTERM cancels its context, and returns the exit
// status: 0 after Ctrl-C, a normal way to end the demo.
func interruptible(f func(context.Context) error) int {
	restore := foreground()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := f(ctx)
	interrupted := ctx.Err() != nil // before stop, which cancels ctx too
	stop()
	restore()
	switch {
	case interrupted:
		fmt.Println("\n==> stopped")
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	return 0
}

// demo is one run: its directory, its output and what it started.
type demo struct {
	bin, dir string
	out      io.Writer
	world    *sandbox.World
}

func run(ctx context.Context, bin string, out io.Writer) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s is missing; run `make demo`, which builds it first", bin)
	}
	dir, err := os.MkdirTemp("", "rdsproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &demo{bin: bin, dir: dir, out: out}
	logf, err := os.Create(filepath.Join(dir, "sandbox.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	d.step("starting the sandbox: PostgreSQL 15, the RDS IAM emulator, moto with RDS databases in %s and %s, the SSM endpoint", sandbox.Region, sandbox.WorldRegion2)
	if d.world, err = sandbox.StartWorld(ctx, dir, logf, slog.New(slog.NewTextHandler(logf, nil))); err != nil {
		return fmt.Errorf("start sandbox (logs in %s): %w", logf.Name(), err)
	}
	defer d.world.Close()
	return d.serve(ctx)
}

// serve starts the server and the client, shows them working, and waits
// for Ctrl-C.
func (d *demo) serve(ctx context.Context) error {
	serverAddr, adminAddr := freeAddr(), freeAddr()
	srv, err := d.startServer(ctx, serverAddr, adminAddr)
	if err != nil {
		return err
	}
	defer srv.stop()
	_, serverPort, _ := net.SplitHostPort(serverAddr)
	envFile, env, err := d.writeClientFiles(serverPort)
	if err != nil {
		return err
	}
	d.step("rdsproxy list   (with %s: the sandbox's SSM endpoint finds instance %s by its tag rdsproxy:server=%s)", envFile, d.world.Instance, sandbox.WorldServer)
	if err := runCmd(ctx, d.out, env, d.bin, "list"); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(freeAddr())
	d.step("rdsproxy connect orders --port %s", port)
	cli, block, err := d.startConnect(ctx, env, "connect", "orders", "--port", port)
	if err != nil {
		return err
	}
	defer cli.stop()
	fmt.Fprint(d.out, block)
	d.step("psql through client → SSM session → server → emulator → PostgreSQL, with no password:")
	psqlEnv := append(env, "PGHOST=127.0.0.1", "PGPORT="+port, "PGUSER="+sandbox.UserIAM, "PGDATABASE="+sandbox.DatabaseApp, "PGSSLMODE=disable")
	if err := runCmd(ctx, d.out, psqlEnv, "psql", "-X", "-c", "SELECT current_user, current_database(), now() AS at"); err != nil {
		return err
	}
	d.printNext(envFile, srv.logPath, cli.logPath)
	var gone *proc
	var lost string
	select {
	case <-ctx.Done():
		return nil
	case <-srv.done:
		gone, lost = srv, fmt.Sprintf("rdsproxy list, psql, token and env, and the demo's connect on port %s, all go\nthrough the server and now fail.", port)
	case <-cli.done:
		gone, lost = cli, fmt.Sprintf("psql on port %s, through the demo's connect, now fails.", port)
	}
	if ctx.Err() != nil { // stopping anyway
		return nil
	}
	return d.exited(gone, lost)
}

// exited says that one of the demo's rdsproxy processes exited while the
// demo was up and what that breaks, keeps its log outside the directory
// the demo removes, and returns the error that ends the demo. It ends
// rather than restarts the process: one that exits on its own has crashed
// or been killed, and a demo that quietly restarted it would hide what
// the user needs to see.
func (d *demo) exited(p *proc, lost string) error {
	status := p.cmd.ProcessState.String()
	d.step("rdsproxy %s exited (%s) while the demo was up", p.name, status)
	kept := d.dir + "-" + p.name + ".log"
	logLine := "Its log is kept: " + kept
	if err := os.Rename(p.logPath, kept); err != nil {
		logLine = fmt.Sprintf("Could not keep its log: %v", err)
	} else if tail, err := lastLines(kept, 10); err == nil {
		fmt.Fprintf(d.out, "The end of its log:\n%s", tail)
	}
	fmt.Fprintf(d.out, `%s
%s Stopping everything and removing
%s; run `+"`make demo`"+` to start again.
`, logLine, lost, d.dir)
	return fmt.Errorf("rdsproxy %s exited: %s", p.name, status)
}

// logTail is the end of p's log, for an error that ends the demo (which
// removes the log with its directory).
func logTail(p *proc) string {
	tail, err := lastLines(p.logPath, 10)
	if err != nil {
		return err.Error()
	}
	return tail
}

// lastLines returns the last n lines of the file at path, indented.
func lastLines(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "    " + strings.Join(lines, "\n    ") + "\n", nil
}

func (d *demo) startServer(ctx context.Context, serverAddr, adminAddr string) (*proc, error) {
	cfgPath := filepath.Join(d.dir, "server.yaml")
	if err := d.world.WriteServerConfig(cfgPath, serverAddr, adminAddr); err != nil {
		return nil, err
	}
	d.step("starting `rdsproxy server --config %s` (discovers by tags, denies %s)", cfgPath, sandbox.WorldDeny)
	srv, err := start(d.dir, "server", d.bin, d.world.ServerEnv(), "server", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, "http://"+adminAddr+"/readyz", srv.done); err != nil {
		srv.stop()
		return nil, fmt.Errorf("rdsproxy server not ready: %w (%s); the end of its log:\n%s", err, srv.cmd.ProcessState, logTail(srv))
	}
	return srv, nil
}

// printNext says how to use the CLI against the sandbox from another
// terminal.
func (d *demo) printNext(envFile, serverLog, clientLog string) {
	fmt.Fprintf(d.out, `
The sandbox is up. In another terminal, point the rdsproxy CLI at it with:

    source %s

then try, as against AWS:

    rdsproxy list
    rdsproxy doctor orders
    rdsproxy psql orders
    rdsproxy token orders
    eval "$(rdsproxy env orders)"; psql    # through the demo's connect
    rdsproxy connect reporting

The sandbox's PostgreSQL itself, as its superuser, with no proxy in between
(to watch pg_stat_activity, say):

    psql "%s"

Logs: %s (server), %s (client), %s (sandbox).
Press Ctrl-C to stop; that removes %s.
`, envFile, d.world.Postgres.SuperuserDSN(), serverLog, clientLog, filepath.Join(d.dir, "sandbox.log"), d.dir)
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n==> "+format+"\n", args...)
}
