package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgSettings make a fast, disposable, loopback-only cluster. The port is
// given on the command line so that a retry on another port needs no edit.
const pgSettings = `
# rdsproxy sandbox
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
unix_socket_permissions = 0777
fsync = off
synchronous_commit = off
full_page_writes = off
# a 200-login burst holds 200 backends (the IAM emulator's rds_iam checks
# share 4 more); the rest is headroom for tests and a second burst
max_connections = 800
shared_buffers = 128MB
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
logging_collector = off
log_min_messages = warning
`

// prepareDirs creates the data and socket directories. As root it picks the
// unprivileged account, hands it both directories, and makes sure it can
// traverse the path down to them.
func (p *Postgres) prepareDirs(dir string) error {
	if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	p.SocketDir = filepath.Join(dir, "sock")
	if len(p.SocketDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		s, err := os.MkdirTemp("", "rdsproxy-pg-")
		if err != nil {
			return fmt.Errorf("create socket dir: %w", err)
		}
		p.SocketDir, p.ownSock = s, true
	} else if err := os.MkdirAll(p.SocketDir, 0o755); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	cred, err := unprivilegedUser()
	if err != nil {
		return err
	}
	p.runAs = cred
	for _, d := range []string{p.DataDir, p.SocketDir} {
		if err := chownTree(d, cred); err != nil {
			return err
		}
		if err := ensureTraversable(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// unprivilegedUser returns the "postgres" account if present, else "nobody":
// initdb and postgres refuse to run as root.
func unprivilegedUser() (*syscall.Credential, error) {
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("user %s has non-numeric ids", name))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root, but no unprivileged user for postgres: %w", errors.Join(errs...))
}

func chownTree(root string, cred *syscall.Credential) error {
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(cred.Uid), int(cred.Gid))
	})
	if err != nil {
		return fmt.Errorf("chown %s for postgres: %w", root, err)
	}
	return nil
}

// ensureTraversable adds search permission for others on dir and its
// ancestors where it is missing (t.TempDir parents are 0700), so that the
// unprivileged postgres user can reach its directories. Nothing is removed
// or made readable.
func ensureTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("allow postgres to traverse %s: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// command prepares a PostgreSQL binary: own process group, the parent-death
// signal SIGQUIT (immediate shutdown) if this process dies without Close,
// the unprivileged user when running as root, and a minimal environment.
func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT, Credential: p.runAs}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	cmd.Dir = p.DataDir
	cmd.Stdout, cmd.Stderr = p.log, p.log
	return cmd
}

// initdb creates the cluster, its TLS key pair and settings.
func (p *Postgres) initdb(ctx context.Context) error {
	cmd := p.command(ctx, "initdb", "-D", p.DataDir, "-U", superuser, "--auth-local=trust",
		"--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb %s: %w (see the postgres log)", p.DataDir, err)
	}
	cert, err := p.ca.Issue("localhost", "127.0.0.1", "pg.sandbox.internal")
	if err != nil {
		return err
	}
	if err := writeKeyPair(cert, filepath.Join(p.DataDir, "server.crt"), filepath.Join(p.DataDir, "server.key")); err != nil {
		return fmt.Errorf("postgres tls: %w", err)
	}
	conf, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, werr := fmt.Fprintf(conf, pgSettings, strings.ReplaceAll(p.SocketDir, "'", "''"))
	if err := errors.Join(werr, conf.Close()); err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	if p.runAs != nil {
		return chownTree(p.DataDir, p.runAs)
	}
	return nil
}

// startWithFreePort starts the server on a port that was free a moment ago,
// trying another one if the server exits during start (port taken).
func (p *Postgres) startWithFreePort(ctx context.Context) error {
	var errs []error
	for range pgStartTries {
		port, err := freePort()
		if err != nil {
			return err
		}
		p.Port = port
		err = p.start(ctx)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errExitedEarly) {
			break
		}
	}
	return fmt.Errorf("start postgres: %w", errors.Join(errs...))
}

var errExitedEarly = errors.New("postgres exited during start")

func (p *Postgres) start(ctx context.Context) error {
	// Not bound to ctx: the server outlives StartPostgres; Close stops it.
	cmd := p.command(context.WithoutCancel(ctx), "postgres", "-D", p.DataDir, "-p", strconv.Itoa(p.Port))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec postgres: %w", err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		p.waitErr = cmd.Wait()
		close(exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		if errors.Is(err, errExitedEarly) {
			return fmt.Errorf("%w on port %d: %v", errExitedEarly, p.Port, p.waitErr)
		}
		return errors.Join(err, p.stop())
	}
	return nil
}

// waitReady polls the unix socket until the server accepts a connection.
func (p *Postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pgStartTimeout)
	defer cancel()
	tick := time.NewTicker(pgPollEvery)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-p.exited:
			return errExitedEarly
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(cctx, p.SuperuserDSN())
		ccancel()
		if err == nil {
			return conn.Close(ctx)
		}
		last = err
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// createRoles creates the sandbox roles and the app database.
func (p *Postgres) createRoles(ctx context.Context) error {
	stmts := []string{
		`CREATE ROLE ` + RoleRDSIAM + ` NOLOGIN`,
		`CREATE ROLE ` + UserIAM + ` LOGIN IN ROLE ` + RoleRDSIAM,
		`CREATE ROLE ` + UserIAMOther + ` LOGIN IN ROLE ` + RoleRDSIAM,
		`CREATE ROLE ` + UserNoIAM + ` LOGIN`,
		`SET password_encryption = 'scram-sha-256'; CREATE ROLE ` + UserPassword + ` LOGIN PASSWORD '` + PasswordOfPW + `'`,
		`CREATE DATABASE ` + DatabaseApp,
	}
	if err := p.execAll(ctx, "postgres", stmts); err != nil {
		return err
	}
	grant := fmt.Sprintf(`GRANT ALL ON SCHEMA public TO %s, %s, %s, %s`, UserIAM, UserIAMOther, UserNoIAM, UserPassword)
	return p.execAll(ctx, DatabaseApp, []string{grant})
}

func (p *Postgres) execAll(ctx context.Context, database string, stmts []string) error {
	conn, err := pgconn.Connect(ctx, p.socketDSN(superuser, database))
	if err != nil {
		return fmt.Errorf("connect to set up roles: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			return fmt.Errorf("set up sandbox roles: %w", err)
		}
	}
	return nil
}
