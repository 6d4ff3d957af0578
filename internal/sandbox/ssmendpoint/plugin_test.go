package ssmendpoint_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
)

// The real session-manager-plugin, built from its public source at the
// version conformance/go.mod pins (a module of its own: the product's
// go.mod stays clean). Building needs the Go module proxy or a warm module
// cache, nothing else.

var (
	pluginOnce sync.Once
	pluginBin  string
	pluginErr  error
)

// goTool is the go command: on PATH, else the toolchain's own.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // go test puts its GOROOT/bin first on the PATH of what it runs
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "session-manager-plugin-")
		if err != nil {
			pluginErr = err
			return
		}
		pluginBin = filepath.Join(dir, "session-manager-plugin")
		cmd := exec.Command(goTool(), "build", "-o", pluginBin, "github.com/aws/session-manager-plugin/src/sessionmanagerplugin-main")
		cmd.Dir = filepath.Join("..", "..", "..", "conformance")
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("build session-manager-plugin in conformance/: %v: %s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginBin
}

type pluginProc struct {
	cmd     *exec.Cmd
	session string
	port    string // the local port the plugin opened
	out     *syncbuf.Buffer
	exited  chan error
}

var portOpened = regexp.MustCompile(`Port (\d+) opened for sessionId (\S+)\.`)

// startPlugin starts a session on PostgreSQL's port and runs the plugin
// for it the way the AWS CLI does, with localPortNumber as given ("" for
// the document's default).
func startPlugin(t *testing.T, e *ssmendpoint.Endpoint, localPort string) *pluginProc {
	t.Helper()
	params := map[string][]string{"portNumber": {strconv.Itoa(pg.Port)}}
	if localPort != "" {
		params["localPortNumber"] = []string{localPort}
	}
	in := &awsssm.StartSessionInput{Target: aws.String(matrixTarget), DocumentName: aws.String("AWS-StartPortForwardingSession"), Parameters: params}
	out, err := apiClient(e).StartSession(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := json.Marshal(map[string]string{"SessionId": aws.ToString(out.SessionId), "TokenValue": aws.ToString(out.TokenValue), "StreamUrl": aws.ToString(out.StreamUrl)})
	req, _ := json.Marshal(map[string]any{"Target": matrixTarget, "DocumentName": "AWS-StartPortForwardingSession", "Parameters": params})
	home := t.TempDir()
	cmd := exec.Command(buildPlugin(t), string(resp), "us-east-1", "StartSession", "", string(req), e.URL())
	cmd.Env = append(os.Environ(), "HOME="+home, "AWS_ACCESS_KEY_ID="+ssmendpoint.DefaultAccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+ssmendpoint.DefaultSecretAccessKey, "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(home, "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(home, "none"),
		"AWS_EC2_METADATA_DISABLED=true")
	p := &pluginProc{cmd: cmd, session: aws.ToString(out.SessionId), out: &syncbuf.Buffer{}, exited: make(chan error, 1)}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	opened := make(chan string, 1)
	go func() {
		readLines(stdout, func(line string) bool {
			fmt.Fprintln(p.out, line)
			if m := portOpened.FindStringSubmatch(line); m != nil && m[2] == p.session {
				opened <- m[1]
			}
			return false
		})
		close(opened)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("plugin output:\n%s", p.out.String())
		}
	})
	var ok bool
	if p.port, ok = <-opened; !ok {
		t.Fatalf("the plugin ended without opening a port: %v\n%s", <-p.exited, p.out.String())
	}
	return p
}

func (p *pluginProc) addr() string { return net.JoinHostPort("127.0.0.1", p.port) }

// freePort returns a port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestPluginMatrix: the real plugin against the paced, agent-faithful
// endpoint: smux negotiated, localPortNumber honoured, the shared matrix
// with 50 MB COPYs each way, then Ctrl-C ends the session with the
// TerminateSession flag; strict mode saw no violation.
func TestPluginMatrix(t *testing.T) {
	t.Parallel() // the paced matrices wait on the agent's pace, not on the CPU
	postgres(t)
	e := matrixEndpoint(t, ssmendpoint.Config{})
	local := freePort(t)
	p := startPlugin(t, e, local)
	if p.port != local {
		t.Fatalf("the plugin opened port %s, localPortNumber was %s", p.port, local)
	}
	runMatrix(t, e, matrixOptions{addr: p.addr(), copyMB: 50, cut: func() { e.CutWebsockets() }})
	st := e.Stats()
	if st.StreamsAccepted == 0 || !slices.Contains(st.ClientVersionsSeen, "handshake:1.3.0.0") {
		t.Errorf("stats %+v: want smux streams and the plugin's ClientVersion", st)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Errorf("plugin exit after Ctrl-C: %v", err)
	}
	waitStats(t, e, "the TerminateSession flag", func(s ssmendpoint.Stats) bool { return s.TerminatedByFlag == 1 })
	t.Logf("endpoint: %+v", e.Stats())
}

// TestPluginTerminatedByAPI: TerminateSession by API ends the plugin
// (channel_closed), with the document's default localPortNumber "0": the
// plugin picks a port.
func TestPluginTerminatedByAPI(t *testing.T) {
	t.Parallel()
	postgres(t)
	e := matrixEndpoint(t, ssmendpoint.Config{})
	p := startPlugin(t, e, "")
	if got := query(t, p.addr(), "select 1"); got != "1" {
		t.Fatalf("select 1 = %q", got)
	}
	if _, err := apiClient(e).TerminateSession(t.Context(), &awsssm.TerminateSessionInput{SessionId: aws.String(p.session)}); err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Errorf("plugin exit after TerminateSession: %v", err)
	}
	if st := e.Stats(); st.TerminatedByAPI != 1 {
		t.Errorf("stats %+v: want the session ended by the API", st)
	}
}
