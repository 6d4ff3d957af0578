package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process whose output goes to a log file.
type proc struct {
	name    string // the rdsproxy command: server, connect
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func start(dir, name, bin string, env []string, args ...string) (*proc, error) {
	return startTee(dir, name, bin, env, nil, args...)
}

// startTee is start with the child's stdout also written to tee.
func startTee(dir, name, bin string, env []string, tee io.Writer, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = clientEnviron(env)
	cmd.Stdout, cmd.Stderr = f, f
	if tee != nil {
		cmd.Stdout = io.MultiWriter(f, tee)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
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

// startConnect starts `rdsproxy connect` and returns, once it is
// listening, the connection block it printed (psql, DSN, JDBC).
func (d *demo) startConnect(ctx context.Context, env []string, args ...string) (*proc, string, error) {
	block := &blockWriter{done: make(chan struct{})}
	p, err := startTee(d.dir, "connect", d.bin, env, block, args...)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-block.done:
		return p, block.String(), nil
	case <-p.done:
		err = fmt.Errorf("rdsproxy connect exited (%s); the end of its log:\n%s", p.cmd.ProcessState, logTail(p))
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stop()
	return nil, "", err
}

// blockWriter collects a child's stdout and closes done once a complete
// JDBC line, the last of a connection block, has been written.
type blockWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
	once sync.Once
}

func (w *blockWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if _, rest, ok := bytes.Cut(w.buf.Bytes(), []byte("  JDBC:")); ok && bytes.Contains(rest, []byte("\n")) {
		w.once.Do(func() { close(w.done) })
	}
	return len(p), nil
}

func (w *blockWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func runCmd(ctx context.Context, out io.Writer, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = clientEnviron(env)
	cmd.Stdout, cmd.Stderr = out, out
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

// waitReady polls a readiness URL until it answers 200, for at most a
// minute, or until exited closes (the process that should answer ended).
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := ready(url)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-exited:
			return errors.New("it exited before it was ready")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ready(url string) error {
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
}
