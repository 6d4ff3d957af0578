// Command bench measures rdsproxy against a direct connection and against
// a bare two-hop TCP relay (the userspace floor on this machine), in one
// run with alternating repetitions, and prints medians and ratios.
// `make bench` runs it. Paths, all ending at the RDS IAM emulator (TLS):
//
//	direct:   pgbench ──TLS──▶ emulator
//	bare:     pgbench ──TLS──▶ relay ──▶ relay ──▶ emulator   (two io.Copy processes)
//	rdsproxy: pgbench ──▶ rdsproxy connect ──▶ rdsproxy server ──TLS──▶ emulator
//
// Then it compares the real session-manager-plugin with rdsproxy connect
// --via ssm through the paced SSM endpoint (ssm.go; -only ssm runs just that).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "relay" {
		bareRelay(os.Args[2], os.Args[3])
		return
	}
	var o options
	flag.IntVar(&o.reps, "reps", 5, "alternating repetitions per workload (COPY through any relay is bimodal on a 2-core machine: see the README)")
	flag.IntVar(&o.secs, "t", 5, "seconds per pgbench run")
	flag.IntVar(&o.copyMB, "copy-mb", 100, "MiB per COPY run")
	flag.IntVar(&o.idle, "idle", 300, "idle sessions for the memory measurement")
	flag.IntVar(&o.freshPairs, "fresh", 5, "new server and client pairs whose idle memory is measured before the workloads (median and range: one fresh process says little)")
	flag.StringVar(&o.only, "only", "", "run only the workloads whose name contains this")
	flag.StringVar(&o.paths, "paths", "", "run only these paths, comma-separated (direct, bare, rdsproxy, local-tls, base): to profile one with perf; the ratios of a path left out print as NaN")
	flag.BoolVar(&o.localTLS, "local-tls", false, "also measure rdsproxy with connect --local-tls (TLS on the loopback hop)")
	flag.IntVar(&o.ssmMB, "ssm-mb", 16, "MiB per COPY through SSM (paced: < 1 MB/s; the unpaced section moves 4x this); 0 skips the SSM comparison")
	flag.StringVar(&o.ssmPaths, "ssm-paths", "", "run only these SSM paths, comma-separated (e.g. stripe-8,stripe-12); the plugin, the anchor, always runs")
	flag.StringVar(&o.base, "base", "", "also measure this other rdsproxy binary (say, a build of the previous commit) as the path \"base\", alternating with the rest")
	pin := flag.Bool("pin", false, "run the proxies on CPU 1 and everything else (PostgreSQL, the emulator, pgbench) on CPU 0, as a server with a core of its own runs")
	flag.Parse()
	if *pin && os.Getenv(proxyCPUsEnv) == "" {
		if err := runPinned(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the bench's flags.
type options struct {
	reps, secs, copyMB, idle, freshPairs, ssmMB int
	only, paths, base, ssmPaths                 string
	localTLS                                    bool
}

// runs reports whether -paths lets the path named name run.
func (o options) runs(name string) bool {
	return o.paths == "" || slices.Contains(strings.Split(o.paths, ","), name)
}

// path is one way to reach the emulator.
type path struct {
	name    string
	addr    string
	sslmode string
	token   bool    // the client sends an IAM token itself (no rdsproxy client)
	procs   []*proc // proxy processes whose CPU and memory count
}

type bench struct {
	world      *sandbox.World
	endpoint   string // the orders endpoint tokens are signed for
	secs       int
	copyMB     int
	localTLS   bool   // add the path through connect --local-tls
	baseBin    string // add the path through this other rdsproxy binary
	serverAddr string // the rdsproxy server's listen address
	resultSQL  string // pgbench script of the larger-result workload
}

// resultQuery returns 256 rows of 1,000 bytes: a result larger than one
// relay chunk (64 KiB), as a report or an ORM's list page returns.
const resultQuery = "SELECT repeat('x', 1000) FROM generate_series(1, 256);\n"

func run(o options) error {
	ctx := context.Background()
	bin, err := filepath.Abs("bin/rdsproxy")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rdsproxy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Println("starting the sandbox (PostgreSQL, RDS IAM emulator, moto)…")
	world, err := sandbox.StartWorld(ctx, dir, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer world.Close()
	b := &bench{world: world, secs: o.secs, copyMB: o.copyMB, endpoint: ordersEndpoint(world), localTLS: o.localTLS, baseBin: o.base,
		resultSQL: filepath.Join(dir, "result.sql")}
	if err := os.WriteFile(b.resultSQL, []byte(resultQuery), 0o600); err != nil {
		return err
	}
	paths, stop, err := b.startPaths(dir, bin)
	defer stop()
	if err != nil {
		return err
	}
	if err := b.pgbench(paths[0], "-i", "-q", "-s", "10"); err != nil {
		return fmt.Errorf("pgbench init: %w", err)
	}
	workloads := slices.DeleteFunc(b.workloads(), func(w workload) bool { return !strings.Contains(w.name, o.only) })
	var fresh [][]float64
	if len(workloads) > 0 {
		if fresh, err = b.freshMemory(dir, bin, o.freshPairs, o.idle); err != nil {
			return err
		}
	}
	results := map[string]map[string][]float64{}
	work := map[string]map[string][]counters{}
	for _, w := range workloads {
		results[w.name] = map[string][]float64{}
		work[w.name] = map[string][]counters{}
		for r := range o.reps {
			for _, p := range paths {
				if !o.runs(p.name) {
					continue
				}
				before := p.counters()
				v, err := w.run(p)
				if err != nil {
					return fmt.Errorf("%s via %s: %w", w.name, p.name, err)
				}
				results[w.name][p.name] = append(results[w.name][p.name], v)
				spent := p.counters().minus(before)
				work[w.name][p.name] = append(work[w.name][p.name], spent)
				fmt.Printf("  %-28s rep %d %-9s %10s %-8s %s\n", w.name, r+1, p.name, w.format(v), w.unit, spent.describe(p))
			}
		}
	}
	if len(workloads) > 0 {
		printTable(workloads, paths, results)
		printWork(workloads, paths, work)
		b.printResources(paths)
		after, err := b.idleMemory(paths[2], o.idle)
		if err != nil {
			return err
		}
		printIdleMemory(paths[2], o.idle, fresh, after)
	}
	if o.ssmMB > 0 && (o.only == "" || strings.Contains("ssm", o.only)) {
		return b.ssm(dir, bin, o.ssmMB, o.ssmPaths, paths[0])
	}
	return nil
}

func ordersEndpoint(w *sandbox.World) string {
	for e := range w.DialMap {
		if strings.HasPrefix(e, "orders.") && strings.Contains(e, "."+sandbox.Region+".") {
			return e
		}
	}
	return ""
}

// startPaths starts the bare relays and rdsproxy server + client (and,
// with -base, a second pair from the base binary).
func (b *bench) startPaths(dir, bin string) ([]path, func(), error) {
	var procs []*proc
	stop := func() {
		for _, p := range procs {
			p.stop()
		}
	}
	started := func(p *proc, err error) (*proc, error) {
		if p != nil {
			procs = append(procs, p)
		}
		return p, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, stop, err
	}
	relay2, relay1 := freeAddr(), freeAddr()
	for _, args := range [][]string{{relay2, b.world.Emulator.Addr()}, {relay1, relay2}} {
		if _, err := started(startProc(dir, "relay-"+args[0], self, nil, "relay", args[0], args[1])); err != nil {
			return nil, stop, err
		}
	}
	srv, serverAddr, err := b.startServer(dir, "server", bin, started)
	if err != nil {
		return nil, stop, err
	}
	b.serverAddr = serverAddr
	startClient := func(name, bin, server string, extra ...string) (*proc, string, error) {
		return b.startClient(dir, name, bin, server, started, extra...)
	}
	cli, local, err := startClient("client", bin, serverAddr)
	if err != nil {
		return nil, stop, err
	}
	paths := []path{
		{name: "direct", addr: b.world.Emulator.Addr(), sslmode: "require", token: true},
		{name: "bare", addr: relay1, sslmode: "require", token: true, procs: procs[:2]},
		{name: "rdsproxy", addr: local, sslmode: "disable", procs: []*proc{srv, cli}},
	}
	if b.localTLS {
		tlsCli, tlsLocal, err := startClient("client-local-tls", bin, serverAddr, "--local-tls")
		if err != nil {
			return nil, stop, err
		}
		paths = append(paths, path{name: "local-tls", addr: tlsLocal, sslmode: "require", procs: []*proc{srv, tlsCli}})
	}
	if b.baseBin != "" {
		baseSrv, baseAddr, err := b.startServer(dir, "base-server", b.baseBin, started)
		if err != nil {
			return nil, stop, err
		}
		baseCli, baseLocal, err := startClient("base-client", b.baseBin, baseAddr)
		if err != nil {
			return nil, stop, err
		}
		paths = append(paths, path{name: "base", addr: baseLocal, sslmode: "disable", procs: []*proc{baseSrv, baseCli}})
	}
	return paths, stop, nil
}

// startServer starts an rdsproxy server from bin on a free address.
func (b *bench) startServer(dir, name, bin string, started func(*proc, error) (*proc, error)) (*proc, string, error) {
	addr, adminAddr := freeAddr(), freeAddr()
	cfg := filepath.Join(dir, name+".yaml")
	if err := b.world.WriteServerConfig(cfg, addr, adminAddr); err != nil {
		return nil, "", err
	}
	srv, err := started(startProc(dir, name, bin, b.world.ServerEnv(), "server", "--config", cfg, "--log-level", "warn", "--max-sessions", "2000",
		"--require-identity=false")) // the SSM comparison's plugin path sends no caller identity; rdsproxy's is verified anyway
	if err != nil {
		return nil, "", err
	}
	return srv, addr, waitDial(addr)
}

// startClient starts rdsproxy connect from bin, --via direct to server,
// on a free local address.
func (b *bench) startClient(dir, name, bin, server string, started func(*proc, error) (*proc, error), extra ...string) (*proc, string, error) {
	local := freeAddr()
	_, port, _ := net.SplitHostPort(local)
	env := append(b.world.ClientEnv(), "RDSPROXY_STATE_DIR="+dir) // not the user's state
	args := append([]string{"connect", "--via", "direct", "--server", server, "orders", "--port", port, "--log-level", "warn"}, extra...)
	p, err := started(startProc(dir, name, bin, env, args...))
	if err != nil {
		return nil, "", err
	}
	return p, local, waitDial(local)
}

type workload struct {
	name, unit string
	run        func(path) (float64, error)
}

// format prints a latency with the digits that tell paths apart.
func (w workload) format(v float64) string {
	if w.unit == "ms/query" {
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func (b *bench) workloads() []workload {
	tps := func(args ...string) func(path) (float64, error) {
		return func(p path) (float64, error) { return b.pgbenchMetric(p, reTPS, args...) }
	}
	lat := func(args ...string) func(path) (float64, error) {
		return func(p path) (float64, error) { return b.pgbenchMetric(p, reLatency, args...) }
	}
	return []workload{
		{"select-only 8 clients", "tps", tps("-S", "-M", "prepared", "-c", "8", "-j", "2")},
		{"tpc-b 8 clients", "tps", tps("-M", "prepared", "-c", "8", "-j", "2")},
		{"select-only 1 client", "ms/query", lat("-S", "-M", "prepared", "-c", "1")},
		{"256 KiB result 1 client", "ms/query", lat("-f", b.resultSQL, "-M", "prepared", "-c", "1")},
		{"connect per query (-C)", "conn/s", tps("-S", "-C", "-c", "8", "-j", "2")},
		{"COPY out", "MB/s", b.copyOut},
		{"COPY in", "MB/s", b.copyIn},
	}
}

var (
	reTPS     = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
	reLatency = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

func (b *bench) pgbenchMetric(p path, re *regexp.Regexp, args ...string) (float64, error) {
	out, err := b.pgbenchOut(p, append(args, "-T", strconv.Itoa(b.secs), "-n")...)
	if err != nil {
		return 0, err
	}
	m := re.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no %s in pgbench output:\n%s", re, out)
	}
	return strconv.ParseFloat(m[1], 64)
}

func (b *bench) pgbench(p path, args ...string) error {
	_, err := b.pgbenchOut(p, args...)
	return err
}

func (b *bench) pgbenchOut(p path, args ...string) (string, error) {
	cmd := exec.Command("pgbench", args...)
	cmd.Env = append(os.Environ(), b.pgEnv(p)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return string(out), nil
}

// pgEnv connects libpq to p; the direct and bare paths need a token.
func (b *bench) pgEnv(p path) []string {
	host, port, _ := net.SplitHostPort(p.addr)
	env := []string{"PGHOST=" + host, "PGPORT=" + port, "PGUSER=" + sandbox.UserIAM, "PGDATABASE=" + sandbox.DatabaseApp, "PGSSLMODE=" + p.sslmode}
	if p.token {
		env = append(env, "PGPASSWORD="+b.token())
	}
	return env
}

func (b *bench) token() string {
	tok, err := iamtoken.SignAt(context.Background(), b.endpoint, sandbox.Region, sandbox.UserIAM, sandbox.Credentials(), time.Now(), 15*time.Minute)
	if err != nil {
		panic(err)
	}
	return tok
}

func (b *bench) connect(p path) (*pgx.Conn, error) {
	host, port, _ := net.SplitHostPort(p.addr)
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=%s", host, port, sandbox.UserIAM, sandbox.DatabaseApp, p.sslmode)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if p.token {
		cfg.Password = b.token()
	}
	return pgx.ConnectConfig(context.Background(), cfg)
}

// generatedRows is a COPY out of rows generated rows of about 100 bytes.
func generatedRows(rows int) string {
	return fmt.Sprintf("COPY (SELECT i, repeat('x', 90) FROM generate_series(1, %d) i) TO STDOUT", rows)
}

// accountsRows is a COPY out of the first rows rows of pgbench_accounts.
func accountsRows(rows int64) string {
	return fmt.Sprintf("COPY (SELECT * FROM pgbench_accounts WHERE aid <= %d) TO STDOUT", rows)
}

func (b *bench) copyOut(p path) (float64, error) {
	conn, err := b.connect(p)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	rows := b.copyMB << 20 / 100
	start := time.Now()
	tag, err := conn.PgConn().CopyTo(context.Background(), io.Discard,
		generatedRows(rows))
	if err != nil {
		return 0, err
	}
	_ = tag
	return float64(b.copyMB) / time.Since(start).Seconds(), nil
}

func (b *bench) copyIn(p path) (float64, error) {
	conn, err := b.connect(p)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS bench_copy; CREATE UNLOGGED TABLE bench_copy (id int, payload text)"); err != nil {
		return 0, err
	}
	line := []byte("12345678\t" + strings.Repeat("y", 90) + "\n")
	src := &repeatReader{line: line, left: int64(b.copyMB) << 20}
	start := time.Now()
	if _, err := conn.PgConn().CopyFrom(ctx, src, "COPY bench_copy FROM STDIN"); err != nil {
		return 0, err
	}
	return float64(b.copyMB) / time.Since(start).Seconds(), nil
}

// repeatReader yields whole copies of line until about left bytes.
type repeatReader struct {
	line []byte
	left int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n+len(r.line) <= len(p) && r.left > 0 {
		n += copy(p[n:], r.line)
		r.left -= int64(len(r.line))
	}
	if n == 0 {
		return 0, io.ErrShortBuffer
	}
	return n, nil
}

func printTable(ws []workload, paths []path, res map[string]map[string][]float64) {
	fmt.Printf("\n%-26s %12s %12s %12s %10s %10s %12s\n", "median", "direct", "bare relay", "rdsproxy", "÷direct", "÷bare", "unit")
	for _, w := range ws {
		d, b, r := median(res[w.name]["direct"]), median(res[w.name]["bare"]), median(res[w.name]["rdsproxy"])
		rd, rb := r/d, r/b
		if w.unit == "ms/query" { // lower is better: report added latency too
			fmt.Printf("%-26s %12.3f %12.3f %12.3f %10.2f %10.2f %12s  (+%.3f ms vs direct, +%.3f vs bare relay)\n", w.name, d, b, r, rd, rb, w.unit, r-d, r-b)
			continue
		}
		fmt.Printf("%-26s %12.1f %12.1f %12.1f %10.2f %10.2f %12s\n", w.name, d, b, r, rd, rb, w.unit)
	}
	for _, other := range paths[3:] { // local-tls, base: each beside rdsproxy
		fmt.Printf("\n%-26s %12s %12s %10s %12s\n", "median", "rdsproxy", other.name, "÷rdsproxy", "unit")
		for _, w := range ws {
			r, o := median(res[w.name]["rdsproxy"]), median(res[w.name][other.name])
			fmt.Printf("%-26s %12.3f %12.3f %10.2f %12s\n", w.name, r, o, o/r, w.unit)
		}
	}
}

// printWork prints what each path's proxy processes spent per repetition:
// CPU, and read/write system calls, which count wake-ups and copies and do
// not depend on what else the machine is doing.
func printWork(ws []workload, paths []path, work map[string]map[string][]counters) {
	fmt.Printf("\nproxy work per rep, medians (the path's proxy processes together)\n")
	fmt.Printf("%-26s %-9s %10s %12s %12s\n", "", "path", "cpu ms", "read calls", "write calls")
	for _, w := range ws {
		for _, p := range paths[1:] {
			var cpu, reads, writes []float64
			for _, c := range work[w.name][p.name] {
				cpu, reads, writes = append(cpu, c.cpu*1000), append(reads, float64(c.reads)), append(writes, float64(c.writes))
			}
			fmt.Printf("%-26s %-9s %10.0f %12.0f %12.0f\n", w.name, p.name, median(cpu), median(reads), median(writes))
		}
	}
}

func (b *bench) printResources(paths []path) {
	fmt.Println("\nproxy processes over the whole run:")
	for _, p := range paths[1:] {
		for _, pr := range p.procs {
			cpu, rss := pr.usage()
			fmt.Printf("  %-9s %-28s cpu %7.1f s   peak RSS %6.1f MiB\n", p.name, pr.name, cpu, float64(rss)/1024)
		}
	}
}

// idleMemory opens n idle sessions through rdsproxy and returns the RSS
// each one adds to each of p's processes, in KiB.
func (b *bench) idleMemory(p path, n int) ([]float64, error) {
	before := make([]int64, len(p.procs))
	for i, pr := range p.procs {
		before[i] = pr.rss()
	}
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	for range n {
		c, err := b.connect(p)
		if err != nil {
			return nil, fmt.Errorf("idle session: %w", err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second) // let RSS settle after the last handshake
	perSession := make([]float64, len(p.procs))
	for i, pr := range p.procs {
		perSession[i] = float64(pr.rss()-before[i]) / float64(n)
	}
	return perSession, nil
}

// freshMemory measures idleMemory in pairs new servers and clients from
// bin, one pair at a time, and returns the measurements of each role
// (server, client). In a fresh process the figure moves with the garbage
// collector's timing (one run of the same build gave a client 9.5 KiB,
// the next 14.8), so one pair says little.
func (b *bench) freshMemory(dir, bin string, pairs, idle int) ([][]float64, error) {
	out := make([][]float64, 2)
	for i := range max(pairs, 1) {
		var procs []*proc
		started := func(p *proc, err error) (*proc, error) {
			if p != nil {
				procs = append(procs, p)
			}
			return p, err
		}
		err := func() error {
			srv, addr, err := b.startServer(dir, fmt.Sprintf("fresh-server-%d", i+1), bin, started)
			if err != nil {
				return err
			}
			cli, local, err := b.startClient(dir, fmt.Sprintf("fresh-client-%d", i+1), bin, addr, started)
			if err != nil {
				return err
			}
			per, err := b.idleMemory(path{name: "fresh", addr: local, sslmode: "disable", procs: []*proc{srv, cli}}, idle)
			for role, kib := range per {
				out[role] = append(out[role], kib)
			}
			return err
		}()
		for _, p := range procs {
			p.stop()
		}
		if err != nil {
			return nil, fmt.Errorf("fresh pair %d: %w", i+1, err)
		}
	}
	return out, nil
}

// printIdleMemory prints what an idle session costs in processes that have
// run nothing yet (the runtime must grow its heap and stacks for them; the
// median and range over fresh pairs) and after the workloads (the sessions
// reuse memory the runtime kept): the two bound what a long-running
// process sees.
func printIdleMemory(p path, n int, fresh [][]float64, after []float64) {
	fmt.Printf("\nmemory per idle session (%d sessions, TLS upstream), KiB of RSS:\n", n)
	fmt.Printf("  %-28s %26s %20s\n", "", fmt.Sprintf("fresh process (%d, median)", len(fresh[0])), "after the workloads")
	for i, pr := range p.procs {
		spread := fmt.Sprintf("%.1f (%.1f–%.1f)", median(fresh[i]), slices.Min(fresh[i]), slices.Max(fresh[i]))
		fmt.Printf("  %-28s %26s %20.1f\n", pr.name, spread, after[i])
	}
}

// median of v; NaN when v is empty (a path -paths left out).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	return s[len(s)/2]
}

// proc is a child process measured through /proc.
type proc struct {
	name string
	cmd  *exec.Cmd
}

// proxyCPUsEnv, set by -pin, names the CPUs that startProc's processes run on.
const proxyCPUsEnv = "RDSPROXY_BENCH_PROXY_CPUS"

// runPinned runs the bench again on CPU 0, with its proxies on CPU 1: how
// busy processes share two cores decides how COPY out goes (see the
// README), and pinning takes that out of the comparison.
func runPinned() error {
	if runtime.NumCPU() < 2 {
		return errors.New("-pin needs two CPUs")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("taskset", append([]string{"-c", "0", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), proxyCPUsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(name, ":", "_")+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if cpus := os.Getenv(proxyCPUsEnv); cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{name: name, cmd: cmd}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// usage is CPU seconds and peak RSS (KiB) so far.
func (p *proc) usage() (float64, int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100, p.status("VmHWM:")
}

func (p *proc) rss() int64 { return p.status("VmRSS:") }

// counters is a process's work so far: CPU seconds and read and write
// system calls (/proc/PID/io; splice(2) is in neither).
type counters struct {
	cpu           float64
	reads, writes int64
}

// describe is a rep's proxy work, for the paths that have proxies: it shows
// which reps ran on a busier machine (more CPU for the same bytes).
func (c counters) describe(p path) string {
	if len(p.procs) == 0 {
		return ""
	}
	return fmt.Sprintf("proxies: cpu %4.0f ms, %d reads, %d writes", c.cpu*1000, c.reads, c.writes)
}

func (c counters) minus(o counters) counters {
	return counters{cpu: c.cpu - o.cpu, reads: c.reads - o.reads, writes: c.writes - o.writes}
}

func (p *proc) counters() counters {
	cpu, _ := p.usage()
	c := counters{cpu: cpu}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.cmd.Process.Pid))
	if err != nil {
		return c
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			c.reads = n
		case "syscw":
			c.writes = n
		}
	}
	return c
}

// counters sums the work of a path's proxy processes.
func (p path) counters() counters {
	var sum counters
	for _, pr := range p.procs {
		c := pr.counters()
		sum.cpu, sum.reads, sum.writes = sum.cpu+c.cpu, sum.reads+c.reads, sum.writes+c.writes
	}
	return sum
}

func (p *proc) status(key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitDial(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bareRelay is the floor: accept, dial, io.Copy both ways.
func bareRelay(listen, target string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}
