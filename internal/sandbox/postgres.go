package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Roles and database created by StartPostgres.
const (
	RoleRDSIAM    = "rds_iam"    // NOLOGIN; membership allows IAM authentication
	UserIAM       = "iam_user"   // LOGIN, member of rds_iam
	UserIAMOther  = "iam_other"  // LOGIN, member of rds_iam
	UserNoIAM     = "noiam_user" // LOGIN, not a member of rds_iam
	UserPassword  = "pw_user"    // LOGIN with a SCRAM password, for passthrough tests
	PasswordOfPW  = "pw-secret"  // password of UserPassword
	DatabaseApp   = "app"        // every role above may create tables in its public schema
	superuser     = "postgres"
	maxSocketPath = 100 // sun_path is 108 bytes; keep a margin
)

const (
	pgStartTimeout = 60 * time.Second
	pgStopTimeout  = 15 * time.Second
	pgPollEvery    = 50 * time.Millisecond
	pgStartTries   = 3 // the free port may be taken between probe and bind
)

// Postgres is a PostgreSQL cluster owned by this process: a data directory
// inside the caller's dir, listening on 127.0.0.1:Port with TLS (certificate
// from CA() for localhost, 127.0.0.1 and pg.sandbox.internal) and on a unix
// socket in SocketDir (trust authentication, used by the emulator).
type Postgres struct {
	Port      int
	SocketDir string
	DataDir   string

	ca       *CA
	log      io.Writer
	bin      string
	runAs    *syscall.Credential // nil unless running as root
	ownSock  bool                // SocketDir was created here and is removed by Close
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd.Wait returns
	waitErr  error         // set before exited is closed
	closeErr error
	closed   sync.Once
}

// StartPostgres initialises a cluster in dir/data, starts it, and creates
// the sandbox roles and database. log receives the server's output (nil
// discards it). It also creates the cluster's CA (see CA). Close stops the
// server; the caller owns and removes dir.
func StartPostgres(ctx context.Context, dir string, log io.Writer) (*Postgres, error) {
	if log == nil {
		log = io.Discard
	}
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	ca, err := NewCA("rdsproxy sandbox postgres CA")
	if err != nil {
		return nil, err
	}
	p := &Postgres{DataDir: filepath.Join(dir, "data"), ca: ca, log: log, bin: bin}
	if err := p.prepareDirs(dir); err != nil {
		p.removeOwnSocket()
		return nil, err
	}
	if err := p.initdb(ctx); err != nil {
		p.removeOwnSocket()
		return nil, err
	}
	if err := p.startWithFreePort(ctx); err != nil {
		p.removeOwnSocket()
		return nil, err
	}
	if err := p.createRoles(ctx); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// CA is the authority that signed the server's TLS certificate.
func (p *Postgres) CA() *CA { return p.ca }

// Addr is the TCP address, 127.0.0.1:Port.
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)) }

// SuperuserDSN connects as postgres to database postgres over the unix
// socket (trust authentication).
func (p *Postgres) SuperuserDSN() string { return p.socketDSN(superuser, "postgres") }

// socketDSN is a keyword/value DSN over the unix socket.
func (p *Postgres) socketDSN(user, database string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", p.SocketDir, p.Port, user, database)
}

// SocketPath is the unix socket file of the server.
func (p *Postgres) SocketPath() string {
	return filepath.Join(p.SocketDir, ".s.PGSQL."+strconv.Itoa(p.Port))
}

// ClientBackends counts client backends in pg_stat_activity, excluding the
// one answering this question and the IAM emulator's rds_iam membership
// connections, so that the count is the clients' sessions.
func (p *Postgres) ClientBackends(ctx context.Context) (int, error) {
	const q = `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		AND application_name IS DISTINCT FROM $1`
	conn, err := pgconn.Connect(ctx, p.SuperuserDSN())
	if err != nil {
		return 0, fmt.Errorf("connect to count backends: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res := conn.ExecParams(ctx, q, [][]byte{[]byte(memberAppName)}, nil, nil, nil).Read()
	if res.Err != nil {
		return 0, fmt.Errorf("count backends: %w", res.Err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("count backends: unexpected result shape")
	}
	return strconv.Atoi(string(res.Rows[0][0]))
}

// Close stops the server: fast shutdown (SIGINT, what pg_ctl stop -m fast
// sends), then immediate (SIGQUIT), then SIGKILL of its process group. It
// removes only the socket directory it created itself, never dir.
func (p *Postgres) Close() error {
	p.closed.Do(func() {
		p.closeErr = p.stop()
		p.removeOwnSocket()
	})
	return p.closeErr
}

func (p *Postgres) stop() error {
	if p.cmd == nil {
		return nil
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT} {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
			return nil
		case <-time.After(pgStopTimeout):
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("stop postgres: did not exit after SIGINT and SIGQUIT; killed")
}

func (p *Postgres) removeOwnSocket() {
	if p.ownSock {
		_ = os.RemoveAll(p.SocketDir)
	}
}

// pgBinDir finds the directory holding initdb and postgres.
func pgBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", errors.New("find postgresql binaries: no initdb via pg_config --bindir or /usr/lib/postgresql/*/bin")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}
