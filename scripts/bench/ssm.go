package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// The SSM comparison: the real session-manager-plugin (built from the
// source conformance/go.mod pins) against rdsproxy connect --via ssm in six
// transports (ssmPaths), all through the sandbox's agent-faithful, paced SSM
// endpoint to the same rdsproxy server (its own process, logging its audit
// lines, --max-stripes 16), one run each, one path after the other:
//
//	plugin:   pgx or pg_dump (token, rdsproxy.target) ──▶ session-manager-plugin ──▶ SSM endpoint ──▶ server ──▶ emulator
//	rdsproxy: pgx or pg_dump ──▶ rdsproxy connect --via ssm ──▶ SSM endpoint (1 to 12 sessions) ──▶ server ──▶ emulator
//
// raw-4 and stripe-4 also measure memory per idle connection (ssm_idle.go);
// then raw-1, stripe-4 and stripe-4-z run again through an unpaced endpoint
// (ssm_unpaced.go).

// ssmPath is one way through the SSM endpoint to the server.
type ssmPath struct {
	name string
	args []string // rdsproxy connect flags; nil for the plugin
	addr string
	proc *proc // the client-side process: the plugin or rdsproxy connect
	// ssmURL, when set, is another SSM endpoint (the unpaced one) than the
	// world's; the path's logs, state and application_name then say so.
	ssmURL string
}

// label names p's logs, state directory and sessions.
func (p *ssmPath) label() string {
	if p.ssmURL != "" {
		return p.name + "-unpaced"
	}
	return p.name
}

// ssmPaths are the paths compared, the plugin (the anchor) first.
func ssmPaths() []*ssmPath {
	return []*ssmPath{
		{name: "plugin"},
		{name: "raw-1", args: []string{"--ssm-sessions", "1", "--no-ssm-striping"}},
		{name: "raw-4", args: []string{"--ssm-sessions", "4", "--no-ssm-striping"}},
		{name: "stripe-4", args: []string{"--ssm-sessions", "4", "--ssm-striping", "--no-ssm-compress"}},
		{name: "stripe-4-z", args: []string{"--ssm-sessions", "4", "--ssm-striping", "--ssm-compress"}},
		{name: "stripe-8", args: []string{"--ssm-sessions", "8", "--ssm-striping", "--no-ssm-compress"}},
		{name: "stripe-12", args: []string{"--ssm-sessions", "12", "--ssm-striping", "--no-ssm-compress"}},
	}
}

// bulk is one bulk transfer's outcome: payload MB/s (MiB, as the rest of
// the bench) and the CPU the client-side process and the server spent per MB.
type bulk struct{ mbps, clientCPU, serverCPU float64 }

type ssmResult struct {
	copyOut, copyIn, accounts bulk
	dump                      bulk                // pg_dump -Fp of the dump table
	idle                      *idleMem            // raw-4 and stripe-4 only
	firstQuery                []time.Duration     // new connection: connect + select 1
	ctrlC                     []time.Duration     // psql's Ctrl-C during a flood of notices, to its exit
	idleQuery                 []time.Duration     // select 1 on an idle connection
	underLoad                 []time.Duration     // select 1 while the accounts COPY runs on another connection
	resent, sent, acks        int64               // agent messages resent and sent, client frames received
	dups                      int64               // client messages the agent already had (client resends)
	audit                     map[string]auditSum // by role: first, bulk, probe, accounts
}

// ssmIdleConns is how many idle connections the memory measurement opens.
const ssmIdleConns = 50

func (b *bench) ssm(dir, bin string, mb int, only string, direct path) error {
	rows := int64(mb) << 20 / 96 // a pgbench_accounts row is ~96 bytes of COPY text
	fmt.Printf("\nSSM: the real session-manager-plugin vs rdsproxy connect --via ssm, paced agent-faithful endpoint, one run each;\n"+
		"COPY out and in of %d MiB; COPY of pgbench_accounts aid <= %d (run again until %d probes) with select 1 every 50 ms on a second connection of the same path;\n"+
		"pg_dump -Fp --table %s: a copy of those %d pgbench_accounts rows made once (the whole 1M-row table would take ~3 min per path at 0.6 MB/s);\n"+
		"RSS growth per idle connection over %d idle connections (raw-4 and stripe-4 only, before the path's transfers)\n",
		mb, rows, minProbes, dumpTable, rows, ssmIdleConns)
	if err := b.makeDumpTable(rows); err != nil {
		return err
	}
	plugin, err := buildPlugin(dir)
	if err != nil {
		return err
	}
	srv, serverPort, err := b.startSSMServer(dir, bin)
	if err != nil {
		return err
	}
	defer srv.stop()
	paths := ssmPaths()
	if only != "" {
		names := strings.Split(only, ",")
		paths = slices.DeleteFunc(paths, func(p *ssmPath) bool { return p.name != "plugin" && !slices.Contains(names, p.name) })
	}
	results := map[string]*ssmResult{}
	for _, p := range paths {
		r, err := b.ssmPath(dir, bin, plugin, serverPort, p, srv, mb, rows)
		if err != nil {
			return fmt.Errorf("ssm via %s: %w", p.name, err)
		}
		results[p.name] = r
	}
	printSSM(paths, results)
	if err := b.directProbe(direct, rows); err != nil {
		return err
	}
	if err := b.ssmCeiling(dir, bin, serverPort, max(mb/4, 1), results); err != nil {
		return err
	}
	return b.ssmUnpaced(dir, bin, serverPort, srv, 4*mb)
}

// ssmPath starts p's client-side process, measures p (and its idle memory
// for raw-4 and stripe-4), stops the process and reads p's audit lines.
func (b *bench) ssmPath(dir, bin, plugin, serverPort string, p *ssmPath, srv *proc, mb int, rows int64) (*ssmResult, error) {
	err := b.startSSMPath(dir, bin, plugin, serverPort, p)
	var idle *idleMem
	if err == nil && (p.name == "raw-4" || p.name == "stripe-4") {
		idle, err = b.ssmIdle(p, srv, ssmIdleConns)
	}
	var r *ssmResult
	if err == nil {
		r, err = b.ssmRun(p, srv, mb, rows)
	}
	if p.proc != nil {
		p.proc.stop()
	}
	if err != nil {
		return nil, err
	}
	r.idle = idle
	want := 9 + ctrlCReps // ssmRun's sessions
	if idle != nil {
		want += idle.conns
	}
	if r.audit, err = readAudit(filepath.Join(dir, "server-ssm.log"), p, want); err != nil {
		return nil, err
	}
	return r, nil
}

// startSSMServer starts the rdsproxy server the SSM agent forwards to, its
// own process so that its CPU is the SSM paths' alone, at --log-level info
// so that its audit lines name each session's transport and wire bytes.
func (b *bench) startSSMServer(dir, bin string) (*proc, string, error) {
	addr, admin := freeAddr(), freeAddr()
	cfg := filepath.Join(dir, "server-ssm.yaml")
	if err := b.world.WriteServerConfig(cfg, addr, admin); err != nil {
		return nil, "", fmt.Errorf("ssm server config: %w", err)
	}
	srv, err := startProc(dir, "server-ssm", bin, b.world.ServerEnv(), "server", "--config", cfg, "--log-level", "info", "--log-format", "json",
		"--max-sessions", "2000", "--require-identity=false", // the plugin path sends no caller identity
		"--max-stripes", "16") // the default, said here: stripe-12 offers 13 stripes
	if err != nil {
		return nil, "", fmt.Errorf("ssm server: %w", err)
	}
	if err := waitDial(addr); err != nil {
		srv.stop()
		return nil, "", fmt.Errorf("ssm server: %w", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	return srv, port, nil
}

// startSSMPath starts p's client-side process: the plugin, or rdsproxy
// connect with p's flags, its own port and state directory.
func (b *bench) startSSMPath(dir, bin, plugin, serverPort string, p *ssmPath) error {
	if p.args == nil {
		pp, addr, err := b.startPlugin(dir, plugin, serverPort)
		p.proc, p.addr = pp, addr
		return err
	}
	state := filepath.Join(dir, "state-ssm-"+p.label())
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	p.addr = freeAddr()
	_, localPort, _ := net.SplitHostPort(p.addr)
	args := append([]string{"connect", "--via", "ssm", "--ssm-target", b.world.Instance, "--ssm-port", serverPort,
		"orders", "--port", localPort, "--log-level", "warn"}, p.args...)
	env := append(b.world.ClientEnv(), "RDSPROXY_STATE_DIR="+state)
	if p.ssmURL != "" {
		env = append(env, "AWS_ENDPOINT_URL_SSM="+p.ssmURL) // the last of a duplicate key wins
	}
	cli, err := startProc(dir, "client-ssm-"+p.label(), bin, env, args...)
	if err != nil {
		return err
	}
	p.proc = cli
	if err := waitDial(p.addr); err != nil {
		return fmt.Errorf("rdsproxy connect --via ssm: %w", err)
	}
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

// appPrefix starts the application_name of p's sessions, which finds them
// in the server's audit lines; the role (what the session is for) follows.
func appPrefix(p *ssmPath) string { return "bench-ssm-" + p.label() + "/" }

// ssmConnect opens a connection through p for role.
func (b *bench) ssmConnect(p *ssmPath, role string) (*pgx.Conn, error) {
	host, port, _ := net.SplitHostPort(p.addr)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable application_name=%s",
		host, port, sandbox.UserIAM, sandbox.DatabaseApp, appPrefix(p)+role))
	if err != nil {
		return nil, err
	}
	if p.args == nil { // the plugin: the client sends the IAM token and the target itself
		cfg.Password = b.token()
		cfg.RuntimeParams["rdsproxy.target"] = "orders"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// ssmRun measures one path: time to a first query on 5 new connections,
// COPY out and in on the bulk connection, idle select 1 on the probe
// connection, then the pgbench_accounts COPY on the accounts connection
// with select 1 on the probe connection meanwhile, then pg_dump -Fp of the
// dump table on its own connection, then psql's Ctrl-C during a flood
// (ssm_cancel.go). 9 sessions and ctrlCReps in all.
func (b *bench) ssmRun(p *ssmPath, srv *proc, mb int, rows int64) (*ssmResult, error) {
	ctx := context.Background()
	before := b.world.SSM.Stats()
	r := &ssmResult{}
	for range 5 {
		start := time.Now()
		c, err := b.ssmConnect(p, "first")
		if err != nil {
			return nil, fmt.Errorf("first query: %w", err)
		}
		if _, err := c.Exec(ctx, "select 1"); err != nil {
			return nil, fmt.Errorf("first query: %w", err)
		}
		r.firstQuery = append(r.firstQuery, time.Since(start))
		c.Close(ctx)
	}
	conn, err := b.ssmConnect(p, "bulk")
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if r.copyOut, err = ssmCopyOut(conn, p, srv, mb); err != nil {
		return nil, err
	}
	if r.copyIn, err = ssmCopyIn(conn, p, srv, mb); err != nil {
		return nil, err
	}
	probe, err := b.ssmConnect(p, "probe")
	if err != nil {
		return nil, err
	}
	defer probe.Close(ctx)
	if r.idleQuery, err = probeIdle(probe, 20); err != nil {
		return nil, err
	}
	acc, err := b.ssmConnect(p, "accounts")
	if err != nil {
		return nil, err
	}
	defer acc.Close(ctx)
	accountsSQL := accountsRows(rows)
	if r.accounts, err = measure(p.proc, srv, func() (n int64, err error) {
		r.underLoad, n, err = probeDuringCopy(acc, probe, accountsSQL)
		return n, err
	}); err != nil {
		return nil, fmt.Errorf("pgbench_accounts COPY: %w", err)
	}
	if r.dump, err = b.ssmDump(p, srv); err != nil {
		return nil, err
	}
	if r.ctrlC, err = b.ssmCtrlC(p); err != nil {
		return nil, err
	}
	after := b.world.SSM.Stats()
	r.sent, r.resent, r.acks = after.AgentSent-before.AgentSent, after.AgentResent-before.AgentResent, after.FramesReceived-before.FramesReceived
	r.dups = after.DuplicatesReacked + after.DuplicatesDropped - before.DuplicatesReacked - before.DuplicatesDropped
	return r, nil
}

// ssmCopyOut measures a COPY out of mb MiB of generated rows on conn.
func ssmCopyOut(conn *pgx.Conn, p *ssmPath, srv *proc, mb int) (bulk, error) {
	copyOutSQL := generatedRows(mb << 20 / 100)
	r, err := measure(p.proc, srv, func() (int64, error) {
		w := &counted{}
		_, err := conn.PgConn().CopyTo(context.Background(), w, copyOutSQL)
		return w.n.Load(), err
	})
	if err != nil {
		return bulk{}, fmt.Errorf("COPY out: %w", err)
	}
	return r, nil
}

// ssmCopyIn measures a COPY in of mb MiB into a fresh bench_ssm on conn.
func ssmCopyIn(conn *pgx.Conn, p *ssmPath, srv *proc, mb int) (bulk, error) {
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS bench_ssm; CREATE UNLOGGED TABLE bench_ssm (id int, payload text)"); err != nil {
		return bulk{}, fmt.Errorf("COPY in: %w", err)
	}
	r, err := measure(p.proc, srv, func() (int64, error) {
		src := &repeatReader{line: []byte("12345678\t" + strings.Repeat("y", 90) + "\n"), left: int64(mb) << 20}
		_, err := conn.PgConn().CopyFrom(ctx, src, "COPY bench_ssm FROM STDIN")
		return int64(mb)<<20 - src.left, err
	})
	if err != nil {
		return bulk{}, fmt.Errorf("COPY in: %w", err)
	}
	return r, nil
}

// measure runs f, which moves the bytes it returns, and reports the MB/s
// and the CPU (utime+stime) client and server spent per MB meanwhile.
func measure(client, server *proc, f func() (int64, error)) (bulk, error) {
	c0, _ := client.usage()
	s0, _ := server.usage()
	start := time.Now()
	n, err := f()
	if err != nil {
		return bulk{}, err
	}
	took := time.Since(start)
	c1, _ := client.usage()
	s1, _ := server.usage()
	mb := float64(n) / (1 << 20)
	return bulk{mbps: mb / took.Seconds(), clientCPU: (c1 - c0) / mb, serverCPU: (s1 - s0) / mb}, nil
}

// probeIdle times n select 1 on an idle connection.
func probeIdle(c *pgx.Conn, n int) ([]time.Duration, error) {
	var took []time.Duration
	for range n {
		start := time.Now()
		if _, err := c.Exec(context.Background(), "select 1"); err != nil {
			return nil, fmt.Errorf("idle select 1: %w", err)
		}
		took = append(took, time.Since(start))
	}
	return took, nil
}

// minProbes: a COPY that ends before this many probes ran (a compressed
// one takes a fraction of a second) runs again, so that the latency under
// load is the median of enough probes.
const minProbes = 20

// probeDuringCopy runs a COPY out on conn (again, until minProbes probes
// ran) and, from its first bytes to its end, a select 1 on probe (another
// connection of the same path) every 50 ms. Only probes that ended while a
// COPY still ran count. It returns them and the bytes the COPYs carried.
func probeDuringCopy(conn, probe *pgx.Conn, copyOutSQL string) ([]time.Duration, int64, error) {
	ctx := context.Background()
	out := &counted{seen: make(chan struct{})}
	copyDone := make(chan error, 1)
	var probes atomic.Int64
	go func() {
		for {
			_, err := conn.PgConn().CopyTo(ctx, out, copyOutSQL)
			if err != nil || probes.Load() >= minProbes {
				copyDone <- err
				return
			}
		}
	}()
	select {
	case <-out.seen:
	case err := <-copyDone:
		return nil, 0, fmt.Errorf("the COPY ended before its first bytes: %v", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var took []time.Duration
	for {
		start := time.Now()
		if _, err := probe.Exec(ctx, "select 1"); err != nil {
			return nil, 0, errors.Join(err, <-copyDone)
		}
		d := time.Since(start)
		select {
		case err := <-copyDone:
			return took, out.n.Load(), err
		default:
			took = append(took, d)
			probes.Store(int64(len(took)))
		}
		select {
		case err := <-copyDone:
			return took, out.n.Load(), err
		case <-tick.C:
		}
	}
}

// counted discards a COPY's output, counting it; it closes seen (if any)
// at the first bytes.
type counted struct {
	n    atomic.Int64
	seen chan struct{}
	once sync.Once
}

func (c *counted) Write(p []byte) (int, error) {
	if c.seen != nil {
		c.once.Do(func() { close(c.seen) })
	}
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// auditSum is what the server's audit lines say about some sessions.
type auditSum struct {
	sessions              int
	transports            []string // distinct transport values
	stripes               int64    // stripes of the session that carried the most bytes to the client
	payloadTo, wireTo     int64    // bytes_to_client and wire_to_client of striped sessions
	payloadFrom, wireFrom int64    // bytes_from_client and wire_from_client of striped sessions
	most                  int64    // the most bytes_to_client of one session
	dropped               int64    // dropped_after_cancel, all sessions
}

func (s *auditSum) add(l auditLine) {
	s.sessions++
	if !slices.Contains(s.transports, l.Transport) {
		s.transports = append(s.transports, l.Transport)
	}
	s.dropped += l.DroppedAfterCancel
	if s.sessions == 1 || l.BytesToClient > s.most {
		s.most, s.stripes = l.BytesToClient, l.Stripes
	}
	if l.WireToClient != nil {
		s.payloadTo, s.wireTo = s.payloadTo+l.BytesToClient, s.wireTo+*l.WireToClient
		s.payloadFrom, s.wireFrom = s.payloadFrom+l.BytesFromClient, s.wireFrom+l.WireFromClient
	}
}

// auditLine is the part of a server "session end" line the bench reads.
type auditLine struct {
	Msg             string `json:"msg"`
	App             string `json:"application_name"`
	Transport       string `json:"transport"`
	Stripes         int64  `json:"stripes"`
	BytesToClient   int64  `json:"bytes_to_client"`
	BytesFromClient int64  `json:"bytes_from_client"`
	WireToClient    *int64 `json:"wire_to_client"` // only on striped sessions
	WireFromClient  int64  `json:"wire_from_client"`
	// DroppedAfterCancel: bytes the server dropped after the client's cancel.
	DroppedAfterCancel int64 `json:"dropped_after_cancel"`
}

// readAudit sums, by role, the audit lines of p's sessions in the server's
// log, waiting (up to 30 s) until want sessions have ended.
func readAudit(logPath string, p *ssmPath, want int) (map[string]auditSum, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		byRole, n, err := sumAudit(logPath, appPrefix(p))
		if err != nil || n >= want {
			return byRole, err
		}
		if time.Now().After(deadline) {
			return byRole, fmt.Errorf("%d of %d audit lines for %s* in %s", n, want, appPrefix(p), logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sumAudit sums the "session end" lines whose application_name starts with
// prefix by the role after it, and counts them.
func sumAudit(logPath, prefix string) (map[string]auditSum, int, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, 0, fmt.Errorf("server log: %w", err)
	}
	defer f.Close()
	byRole, n := map[string]auditSum{}, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l auditLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "session end" {
			continue
		}
		role, ok := strings.CutPrefix(l.App, prefix)
		if !ok {
			continue
		}
		s := byRole[role]
		s.add(l)
		byRole[role] = s
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("server log: %w", err)
	}
	return byRole, n, nil
}

func printSSM(paths []*ssmPath, res map[string]*ssmResult) {
	ms := func(d []time.Duration, q float64) string {
		if len(d) == 0 {
			return "-"
		}
		return strconv.FormatFloat(millis(quantile(d, q)), 'f', 1, 64)
	}
	ratio := func(a, b int64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(a)/float64(b))
	}
	fmt.Printf("\n%-46s", "SSM (one run)")
	for _, p := range paths {
		fmt.Printf(" %14s", p.name)
	}
	fmt.Println()
	anchor := res[paths[0].name]
	row := func(name string, f func(r *ssmResult) string) {
		fmt.Printf("%-46s", name)
		for _, p := range paths {
			fmt.Printf(" %14s", f(res[p.name]))
		}
		fmt.Println()
	}
	f2 := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	ms1 := func(v float64) string { return strconv.FormatFloat(v*1000, 'f', 1, 64) }
	row("transport (server audit, all sessions)", func(r *ssmResult) string {
		var ts []string
		for _, s := range r.audit {
			ts = append(ts, s.transports...)
		}
		slices.Sort(ts)
		return strings.Join(slices.Compact(ts), ",")
	})
	row("stripes: bulk / accounts connection", func(r *ssmResult) string {
		return fmt.Sprintf("%d / %d", max(r.audit["bulk"].stripes, 1), max(r.audit["accounts"].stripes, 1))
	})
	row("COPY out (MB/s)", func(r *ssmResult) string { return f2(r.copyOut.mbps) })
	row("  ÷ plugin", func(r *ssmResult) string { return f2(r.copyOut.mbps / anchor.copyOut.mbps) })
	row("COPY in (MB/s)", func(r *ssmResult) string { return f2(r.copyIn.mbps) })
	row("  ÷ plugin", func(r *ssmResult) string { return f2(r.copyIn.mbps / anchor.copyIn.mbps) })
	row("COPY pgbench_accounts out (MB/s)", func(r *ssmResult) string { return f2(r.accounts.mbps) })
	row("  ÷ plugin", func(r *ssmResult) string { return f2(r.accounts.mbps / anchor.accounts.mbps) })
	row("pg_dump -Fp "+dumpTable+" (MB/s)", func(r *ssmResult) string { return f2(r.dump.mbps) })
	row("  ÷ plugin", func(r *ssmResult) string { return f2(r.dump.mbps / anchor.dump.mbps) })
	row("select 1 idle, median (ms)", func(r *ssmResult) string { return ms(r.idleQuery, 0.5) })
	row("select 1 during accounts COPY, median (ms)", func(r *ssmResult) string { return ms(r.underLoad, 0.5) })
	row("select 1 during accounts COPY, max (ms)", func(r *ssmResult) string { return ms(r.underLoad, 1) })
	row("  probes during the COPY", func(r *ssmResult) string { return strconv.Itoa(len(r.underLoad)) })
	row("  during ÷ idle, medians (goal ≤ 2)", func(r *ssmResult) string {
		return ratio(int64(quantile(r.underLoad, 0.5)), int64(quantile(r.idleQuery, 0.5)))
	})
	row("new connection to first result, median (ms)", func(r *ssmResult) string { return ms(r.firstQuery, 0.5) })
	row(fmt.Sprintf("psql Ctrl-C in a notice flood, median of %d (ms)", ctrlCReps), func(r *ssmResult) string { return ms(r.ctrlC, 0.5) })
	row("  dropped after the cancels (audit, KiB)", func(r *ssmResult) string {
		return strconv.FormatInt(r.audit["ctrl-c"].dropped>>10, 10)
	})
	row("client process CPU ms/MB, COPY out", func(r *ssmResult) string { return ms1(r.copyOut.clientCPU) })
	row("client process CPU ms/MB, COPY in", func(r *ssmResult) string { return ms1(r.copyIn.clientCPU) })
	row("client process CPU ms/MB, accounts", func(r *ssmResult) string { return ms1(r.accounts.clientCPU) })
	row("client process CPU ms/MB, pg_dump", func(r *ssmResult) string { return ms1(r.dump.clientCPU) })
	row("server process CPU ms/MB, COPY out", func(r *ssmResult) string { return ms1(r.copyOut.serverCPU) })
	row("server process CPU ms/MB, COPY in", func(r *ssmResult) string { return ms1(r.copyIn.serverCPU) })
	row("server process CPU ms/MB, accounts", func(r *ssmResult) string { return ms1(r.accounts.serverCPU) })
	row("server process CPU ms/MB, pg_dump", func(r *ssmResult) string { return ms1(r.dump.serverCPU) })
	row("payload ÷ wire, COPY out (audit)", func(r *ssmResult) string { return ratio(r.audit["bulk"].payloadTo, r.audit["bulk"].wireTo) })
	row("payload ÷ wire, COPY in (audit)", func(r *ssmResult) string { return ratio(r.audit["bulk"].payloadFrom, r.audit["bulk"].wireFrom) })
	row("payload ÷ wire, accounts COPY (audit)", func(r *ssmResult) string {
		return ratio(r.audit["accounts"].payloadTo, r.audit["accounts"].wireTo)
	})
	row("payload ÷ wire, pg_dump (audit)", func(r *ssmResult) string { return ratio(r.audit["dump"].payloadTo, r.audit["dump"].wireTo) })
	row(fmt.Sprintf("idle connection RSS, client KiB/conn (%d)", ssmIdleConns), func(r *ssmResult) string { return r.idle.client() })
	row(fmt.Sprintf("idle connection RSS, server KiB/conn (%d)", ssmIdleConns), func(r *ssmResult) string { return r.idle.server() })
	row("agent messages sent", func(r *ssmResult) string { return strconv.FormatInt(r.sent, 10) })
	row("agent messages resent", func(r *ssmResult) string { return strconv.FormatInt(r.resent, 10) })
	row("client frames received by the agent", func(r *ssmResult) string { return strconv.FormatInt(r.acks, 10) })
	row("client messages the agent already had", func(r *ssmResult) string { return strconv.FormatInt(r.dups, 10) })
	fmt.Println("client process: session-manager-plugin or rdsproxy connect; server: the rdsproxy server (its own process, SSM paths only);\n" +
		"CPU from /proc/PID/stat utime+stime (10 ms ticks) over each transfer; MB = MiB of payload; payload ÷ wire: striped sessions only")
}

// quantile is the q-quantile of d, 0 when d is empty.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(q*float64(len(s)-1))]
}
