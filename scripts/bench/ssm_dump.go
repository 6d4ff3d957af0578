package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// dumpTable is what the SSM comparison's pg_dump dumps: the first rows of
// pgbench_accounts, as many as its accounts COPY carries, so that pg_dump
// moves about as many bytes as that COPY (the whole table is ~96 MiB).
const dumpTable = "bench_ssm_dump"

// makeDumpTable (re)creates dumpTable from the first rows rows of
// pgbench_accounts, directly on the emulator (not through any SSM path).
func (b *bench) makeDumpTable(rows int64) error {
	conn, err := b.connect(path{addr: b.world.Emulator.Addr(), sslmode: "require", token: true})
	if err != nil {
		return fmt.Errorf("dump table: %w", err)
	}
	defer conn.Close(context.Background())
	sql := fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s AS SELECT * FROM pgbench_accounts WHERE aid <= %[2]d", dumpTable, rows)
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		return fmt.Errorf("dump table: %w", err)
	}
	return nil
}

// ssmDump runs pg_dump -Fp of dumpTable through p, its output counted and
// discarded. pg_dump opens one connection (no -j).
func (b *bench) ssmDump(p *ssmPath, srv *proc) (bulk, error) {
	env := b.ssmPGEnv(p, "dump")
	var stderr strings.Builder
	r, err := measure(p.proc, srv, func() (int64, error) {
		out := &counted{}
		cmd := exec.Command(pgBin("pg_dump"), "-Fp", "--table", dumpTable)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = out, &stderr
		err := cmd.Run()
		return out.n.Load(), err
	})
	if err != nil {
		return bulk{}, fmt.Errorf("pg_dump: %w: %s", err, stderr.String())
	}
	return r, nil
}

// ssmPGEnv connects libpq to p for role. Through the plugin the client
// sends the IAM token and, in options, the rdsproxy.target parameter
// itself, as ssmConnect does for pgx.
func (b *bench) ssmPGEnv(p *ssmPath, role string) []string {
	host, port, _ := net.SplitHostPort(p.addr)
	env := []string{"PGHOST=" + host, "PGPORT=" + port, "PGUSER=" + sandbox.UserIAM, "PGDATABASE=" + sandbox.DatabaseApp,
		"PGSSLMODE=disable", "PGAPPNAME=" + appPrefix(p) + role}
	if p.args == nil {
		env = append(env, "PGPASSWORD="+b.token(), "PGOPTIONS=-c rdsproxy.target=orders")
	}
	return env
}

// pgBin is the program name of the PostgreSQL the sandbox runs (pg_config
// --bindir), else the one on PATH.
func pgBin(name string) string {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return name
	}
	bin := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(bin); err != nil {
		return name
	}
	return bin
}
