package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Fixed sandbox credentials. moto accepts any key; the fixed pair lets the
// other sandbox parts (the RDS IAM emulator) verify SigV4 signatures made
// with it. It grants nothing anywhere.
const (
	MotoAccessKeyID     = "AKIASANDBOXRDSPROXY0"
	MotoSecretAccessKey = "sandbox/rdsproxy/secret/not-a-real-key00"
	// MotoAccountID is the account moto puts in every ARN.
	MotoAccountID = "123456789012"
)

// motoStartTimeout bounds how long moto_server may take to announce its
// port (a cold Python start takes a few seconds on a busy machine).
const motoStartTimeout = 60 * time.Second

// motoReady is the line werkzeug prints once the socket listens; with
// "-p 0" it names the port the kernel chose, so there is no port race.
var motoReady = regexp.MustCompile(`Running on (http://127\.0\.0\.1:\d+)`)

// Moto is a running moto_server on 127.0.0.1. Close stops it.
type Moto struct {
	cmd      *exec.Cmd
	endpoint string
	exited   chan struct{} // closed when the process has been reaped
	waitErr  error         // set before exited is closed
	drained  chan struct{} // closed when moto's output has all been copied
}

// StartMoto runs the moto_server found on PATH in dir, on 127.0.0.1 and a
// port the kernel picks, copies its output to log (nil: discarded), and
// returns once the server answers HTTP. ctx bounds the start only; the
// process lives until Close.
func StartMoto(ctx context.Context, dir string, log io.Writer) (*Moto, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	if log == nil {
		log = io.Discard
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.Stdout, cmd.Stderr = pw, pw
	// Pdeathsig: moto dies with the test binary even when that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start moto: %w", err)
	}
	m := &Moto{cmd: cmd, exited: make(chan struct{}), drained: make(chan struct{})}
	found := make(chan string, 1)
	go m.pumpOutput(pr, log, found)
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()

	if err := m.awaitReady(ctx, found); err != nil {
		m.Close()
		return nil, fmt.Errorf("start moto: %w", err)
	}
	return m, nil
}

// pumpOutput copies moto's output to log until the process closes it,
// and reports the endpoint from the ready line once. It ends when every
// holder of the pipe's write end (moto and its children) has exited.
func (m *Moto) pumpOutput(r io.ReadCloser, log io.Writer, found chan<- string) {
	defer close(m.drained)
	defer r.Close()
	sc := bufio.NewScanner(r)
	reported := false
	for sc.Scan() {
		fmt.Fprintln(log, sc.Text())
		if sub := motoReady.FindStringSubmatch(sc.Text()); !reported && sub != nil {
			found <- sub[1]
			reported = true
		}
	}
	_, _ = io.Copy(log, r) // a line too long for the scanner
}

func (m *Moto) awaitReady(ctx context.Context, found <-chan string) error {
	ctx, cancel := context.WithTimeout(ctx, motoStartTimeout)
	defer cancel()
	select {
	case m.endpoint = <-found:
	case <-m.exited:
		return fmt.Errorf("moto_server exited before listening: %v", m.waitErr)
	case <-ctx.Done():
		return fmt.Errorf("moto_server did not listen: %w", ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.endpoint+"/moto-api/data.json", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("moto_server does not answer: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("moto_server answers %s", resp.Status)
	}
	return nil
}

// Endpoint is moto's base URL, http://127.0.0.1:PORT.
func (m *Moto) Endpoint() string { return m.endpoint }

// Close kills moto's process group and waits until it has exited and its
// output has been copied. It is safe to call more than once.
func (m *Moto) Close() error {
	select {
	case <-m.exited: // reaped: its process group id may belong to others now
	default:
		err := syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop moto: %w", err)
		}
		<-m.exited
	}
	<-m.drained
	return nil
}

// AWSConfig is an SDK configuration that talks to this moto in region,
// with the fixed sandbox credentials (MotoAccessKeyID) and the SDK's
// default retryer. Nothing is read from the environment or ~/.aws.
func (m *Moto) AWSConfig(region string) aws.Config {
	return aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider(MotoAccessKeyID, MotoSecretAccessKey, ""),
		BaseEndpoint: aws.String(m.endpoint),
	}
}

// Reset drops everything moto holds, in every region.
func (m *Moto) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.endpoint+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reset moto: %s", resp.Status)
	}
	return nil
}
