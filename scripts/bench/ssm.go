package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
)

// The SSM comparison: the real session-manager-plugin (built from the
// source conformance/go.mod pins) against rdsproxy connect --via ssm, both
// through the sandbox's agent-faithful, paced SSM endpoint to the same
// rdsproxy server, one run each:
//
//	plugin:   pgx (token, rdsproxy.target) ──▶ session-manager-plugin ──▶ SSM endpoint ──▶ server ──▶ emulator
//	rdsproxy: pgx ──▶ rdsproxy connect --via ssm ──▶ SSM endpoint ──▶ server ──▶ emulator

type ssmPath struct {
	name   string
	addr   string
	token  bool // the client sends the IAM token and the target itself
	before ssmendpoint.Stats
}

type ssmResult struct {
	copyOut, copyIn    float64         // MB/s
	firstQuery         []time.Duration // new connection: connect + select 1
	underLoad          []time.Duration // select 1 while a COPY runs on another connection
	resent, sent, acks int64           // agent messages resent and sent, client frames received
	dups               int64           // client messages the agent already had (client resends)
}

func (b *bench) ssm(dir, bin string, mb int) error {
	fmt.Printf("\nSSM: the real session-manager-plugin vs rdsproxy connect --via ssm, paced agent-faithful endpoint, %d MiB COPYs, one run;\n"+
		"select 1 every 250 ms on a second connection of the same tunnel while the first runs a COPY out\n", mb)
	plugin, err := buildPlugin(dir)
	if err != nil {
		return err
	}
	_, serverPort, _ := net.SplitHostPort(b.serverAddr)
	local := freeAddr()
	_, localPort, _ := net.SplitHostPort(local)
	cli, err := startProc(dir, "client-ssm", bin, append(b.world.ClientEnv(), "RDSPROXY_STATE_DIR="+dir),
		"connect", "--via", "ssm", "--ssm-target", b.world.Instance, "--ssm-port", serverPort, "orders", "--port", localPort, "--log-level", "warn")
	if err != nil {
		return err
	}
	defer cli.stop()
	if err := waitDial(local); err != nil {
		return fmt.Errorf("rdsproxy connect --via ssm: %w", err)
	}
	pp, pluginAddr, err := b.startPlugin(dir, plugin, serverPort)
	if err != nil {
		return err
	}
	defer pp.stop()
	paths := []*ssmPath{{name: "plugin", addr: pluginAddr, token: true}, {name: "rdsproxy", addr: local}}
	results := map[string]*ssmResult{}
	for _, p := range paths {
		r, err := b.ssmRun(p, mb)
		if err != nil {
			return fmt.Errorf("ssm via %s: %w", p.name, err)
		}
		results[p.name] = r
	}
	printSSM(paths, results)
	return nil
}

// buildPlugin builds session-manager-plugin from the pinned source.
func buildPlugin(dir string) (string, error) {
	out := filepath.Join(dir, "session-manager-plugin")
	cmd := exec.Command("go", "build", "-o", out, "github.com/aws/session-manager-plugin/src/sessionmanagerplugin-main")
	cmd.Dir = "conformance"
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build session-manager-plugin: %w: %s", err, b)
	}
	return out, nil
}

// startPlugin starts a session to the server's port and runs the plugin
// for it as the AWS CLI would.
func (b *bench) startPlugin(dir, plugin, serverPort string) (*proc, string, error) {
	api := awsssm.New(awsssm.Options{Region: sandbox.Region, BaseEndpoint: aws.String(b.world.SSM.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(sandbox.AccessKeyID, sandbox.SecretAccessKey, "")})
	addr := freeAddr()
	_, port, _ := net.SplitHostPort(addr)
	params := map[string][]string{"portNumber": {serverPort}, "localPortNumber": {port}}
	out, err := api.StartSession(context.Background(), &awsssm.StartSessionInput{Target: aws.String(b.world.Instance),
		DocumentName: aws.String("AWS-StartPortForwardingSession"), Parameters: params})
	if err != nil {
		return nil, "", err
	}
	resp, _ := json.Marshal(map[string]string{"SessionId": aws.ToString(out.SessionId), "TokenValue": aws.ToString(out.TokenValue), "StreamUrl": aws.ToString(out.StreamUrl)})
	req, _ := json.Marshal(map[string]any{"Target": b.world.Instance, "DocumentName": "AWS-StartPortForwardingSession", "Parameters": params})
	home := filepath.Join(dir, "plugin-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, "", err
	}
	env := append(b.world.ClientEnv(), "HOME="+home)
	p, err := startProc(dir, "session-manager-plugin", plugin, env, string(resp), sandbox.Region, "StartSession", "", string(req), b.world.SSM.URL())
	if err != nil {
		return nil, "", err
	}
	if err := waitDial(addr); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("session-manager-plugin: %w", err)
	}
	return p, addr, nil
}

func (b *bench) ssmConnect(p *ssmPath) (*pgx.Conn, error) {
	host, port, _ := net.SplitHostPort(p.addr)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, sandbox.UserIAM, sandbox.DatabaseApp))
	if err != nil {
		return nil, err
	}
	if p.token {
		cfg.Password = b.token()
		cfg.RuntimeParams["rdsproxy.target"] = "orders"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// ssmRun measures one path: time to a first query on new connections,
// COPY out and in, and select 1 while a COPY runs on another connection.
func (b *bench) ssmRun(p *ssmPath, mb int) (*ssmResult, error) {
	ctx := context.Background()
	p.before = b.world.SSM.Stats()
	r := &ssmResult{}
	for range 5 {
		start := time.Now()
		c, err := b.ssmConnect(p)
		if err != nil {
			return nil, err
		}
		if _, err := c.Exec(ctx, "select 1"); err != nil {
			return nil, err
		}
		r.firstQuery = append(r.firstQuery, time.Since(start))
		c.Close(ctx)
	}
	conn, err := b.ssmConnect(p)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows := mb << 20 / 100
	copyOutSQL := fmt.Sprintf("COPY (SELECT i, repeat('x', 90) FROM generate_series(1, %d) i) TO STDOUT", rows)
	start := time.Now()
	if _, err := conn.PgConn().CopyTo(ctx, io.Discard, copyOutSQL); err != nil {
		return nil, err
	}
	r.copyOut = float64(mb) / time.Since(start).Seconds()
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS bench_ssm_"+p.name+"; CREATE UNLOGGED TABLE bench_ssm_"+p.name+" (id int, payload text)"); err != nil {
		return nil, err
	}
	src := &repeatReader{line: []byte("12345678\t" + strings.Repeat("y", 90) + "\n"), left: int64(mb) << 20}
	start = time.Now()
	if _, err := conn.PgConn().CopyFrom(ctx, src, "COPY bench_ssm_"+p.name+" FROM STDIN"); err != nil {
		return nil, err
	}
	r.copyIn = float64(mb) / time.Since(start).Seconds()
	probe, err := b.ssmConnect(p)
	if err != nil {
		return nil, err
	}
	defer probe.Close(ctx)
	if r.underLoad, err = probeDuringCopy(conn, probe, copyOutSQL); err != nil {
		return nil, err
	}
	after := b.world.SSM.Stats()
	r.sent, r.resent, r.acks = after.AgentSent-p.before.AgentSent, after.AgentResent-p.before.AgentResent, after.FramesReceived-p.before.FramesReceived
	r.dups = after.DuplicatesReacked + after.DuplicatesDropped - p.before.DuplicatesReacked - p.before.DuplicatesDropped
	return r, nil
}

// probeDuringCopy runs a COPY out on conn and, from its first bytes to its
// end, a select 1 on probe (another connection of the same tunnel) every
// 250 ms. Only probes that ended while the COPY still ran count.
func probeDuringCopy(conn, probe *pgx.Conn, copyOutSQL string) ([]time.Duration, error) {
	ctx := context.Background()
	first := &firstBytes{seen: make(chan struct{})}
	copyDone := make(chan error, 1)
	go func() {
		_, err := conn.PgConn().CopyTo(ctx, first, copyOutSQL)
		copyDone <- err
	}()
	select {
	case <-first.seen:
	case err := <-copyDone:
		return nil, fmt.Errorf("the COPY ended before its first bytes: %v", err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var took []time.Duration
	for {
		start := time.Now()
		if _, err := probe.Exec(ctx, "select 1"); err != nil {
			return nil, errors.Join(err, <-copyDone)
		}
		d := time.Since(start)
		select {
		case err := <-copyDone:
			return minProbes(took, err)
		default:
			took = append(took, d)
		}
		select {
		case err := <-copyDone:
			return minProbes(took, err)
		case <-tick.C:
		}
	}
}

func minProbes(took []time.Duration, copyErr error) ([]time.Duration, error) {
	if copyErr != nil {
		return nil, copyErr
	}
	if len(took) < 5 {
		return nil, fmt.Errorf("only %d select 1 probes ended during the COPY (make it bigger: -ssm-mb)", len(took))
	}
	return took, nil
}

// firstBytes discards a COPY's output and closes seen at its first bytes.
type firstBytes struct {
	seen chan struct{}
	once sync.Once
}

func (f *firstBytes) Write(p []byte) (int, error) {
	f.once.Do(func() { close(f.seen) })
	return len(p), nil
}

func printSSM(paths []*ssmPath, res map[string]*ssmResult) {
	ms := func(d []time.Duration, q float64) string {
		s := slices.Clone(d)
		slices.Sort(s)
		if len(s) == 0 {
			return "-"
		}
		return strconv.FormatFloat(float64(s[int(q*float64(len(s)-1))].Microseconds())/1000, 'f', 1, 64)
	}
	fmt.Printf("\n%-44s %14s %14s\n", "SSM (one run)", paths[0].name, paths[1].name)
	row := func(name string, f func(r *ssmResult) string) {
		fmt.Printf("%-44s %14s %14s\n", name, f(res[paths[0].name]), f(res[paths[1].name]))
	}
	row("COPY out (MB/s)", func(r *ssmResult) string { return fmt.Sprintf("%.2f", r.copyOut) })
	row("COPY in (MB/s)", func(r *ssmResult) string { return fmt.Sprintf("%.2f", r.copyIn) })
	row("select 1 during a COPY, median (ms)", func(r *ssmResult) string { return ms(r.underLoad, 0.5) })
	row("select 1 during a COPY, max (ms)", func(r *ssmResult) string { return ms(r.underLoad, 1) })
	row("new connection to first result, median (ms)", func(r *ssmResult) string { return ms(r.firstQuery, 0.5) })
	row("agent messages sent", func(r *ssmResult) string { return strconv.FormatInt(r.sent, 10) })
	row("agent messages resent", func(r *ssmResult) string { return strconv.FormatInt(r.resent, 10) })
	row("client frames received by the agent", func(r *ssmResult) string { return strconv.FormatInt(r.acks, 10) })
	row("client messages the agent already had", func(r *ssmResult) string { return strconv.FormatInt(r.dups, 10) })
}
