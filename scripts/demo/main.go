// Command demo runs rdsproxy on the local sandbox: PostgreSQL behind the
// RDS IAM emulator, moto holding RDS instances and an Aurora cluster with
// tags, the real rdsproxy server discovering them, and rdsproxy connect in
// front. It runs one query with psql, prints what to paste, and serves
// until Ctrl-C, then stops everything it started. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin, err := filepath.Abs("bin/rdsproxy")
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
	logf, err := os.Create(filepath.Join(dir, "sandbox.log"))
	if err != nil {
		return err
	}
	defer logf.Close()

	step("starting the sandbox: PostgreSQL 15, the RDS IAM emulator, moto with RDS databases in %s and %s, the SSM endpoint", sandbox.Region, sandbox.WorldRegion2)
	world, err := sandbox.StartWorld(ctx, dir, logf, slog.New(slog.NewTextHandler(logf, nil)))
	if err != nil {
		return fmt.Errorf("start sandbox (logs in %s): %w", logf.Name(), err)
	}
	defer world.Close()

	serverAddr, adminAddr, localAddr := freeAddr(), freeAddr(), freeAddr()
	cfgPath := filepath.Join(dir, "server.yaml")
	if err := world.WriteServerConfig(cfgPath, serverAddr, adminAddr); err != nil {
		return err
	}
	step("starting `rdsproxy server --config %s` (discovers by tags, denies %s)", cfgPath, sandbox.WorldDeny)
	srv, err := start(ctx, dir, "server", bin, world.ServerEnv(), "server", "--config", cfgPath)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := waitReady(ctx, "http://"+adminAddr+"/readyz"); err != nil {
		return fmt.Errorf("server not ready (log: %s): %w", srv.logPath, err)
	}

	_, serverPort, _ := net.SplitHostPort(serverAddr)
	step("rdsproxy list --via ssm --ssm-server %s --ssm-port %s   (the sandbox's SSM endpoint finds instance %s by its tag)", sandbox.WorldServer, serverPort, world.Instance)
	if err := runCmd(ctx, world.ClientEnv(), bin, "list", "--via", "ssm", "--ssm-server", sandbox.WorldServer, "--ssm-port", serverPort); err != nil {
		return err
	}

	_, port, _ := net.SplitHostPort(localAddr)
	step("starting `rdsproxy connect --via ssm --ssm-server %s --ssm-port %s orders --port %s`", sandbox.WorldServer, serverPort, port)
	cli, err := start(ctx, dir, "connect", bin, world.ClientEnv(), "connect", "--via", "ssm", "--ssm-server", sandbox.WorldServer,
		"--ssm-port", serverPort, "orders", "--port", port, "--user", sandbox.UserIAM)
	if err != nil {
		return err
	}
	defer cli.stop()
	if err := waitListening(ctx, localAddr); err != nil {
		return fmt.Errorf("client not listening (log: %s): %w", cli.logPath, err)
	}

	psqlEnv := []string{"PGHOST=127.0.0.1", "PGPORT=" + port, "PGUSER=" + sandbox.UserIAM, "PGDATABASE=" + sandbox.DatabaseApp, "PGSSLMODE=disable"}
	step("psql through client → SSM session → server → emulator → PostgreSQL, with no password:")
	if err := runCmd(ctx, psqlEnv, "psql", "-X", "-c", "SELECT current_user, current_database(), now() AS at"); err != nil {
		return err
	}
	fmt.Printf("\nrdsproxy is serving target \"orders\" on 127.0.0.1:%s. Connect with:\n\n    psql \"host=127.0.0.1 port=%s user=%s dbname=%s sslmode=disable\"\n\n", port, port, sandbox.UserIAM, sandbox.DatabaseApp)
	fmt.Printf("Logs: %s (server), %s (client), %s (sandbox). Press Ctrl-C to stop.\n", srv.logPath, cli.logPath, logf.Name())
	<-ctx.Done()
	step("stopping")
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// proc is a child process whose output goes to a log file.
type proc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func start(ctx context.Context, dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM and waits up to 10 seconds before killing.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func runCmd(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls a readiness URL until it answers 200.
func waitReady(ctx context.Context, url string) error {
	return poll(ctx, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

func waitListening(ctx context.Context, addr string) error {
	return poll(ctx, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func poll(ctx context.Context, try func() error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
