package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// memberConns bounds the superuser connections the emulator keeps for
	// rds_iam membership checks. RDS checks membership inside the backend it
	// starts for the session; the emulator's checks share these few
	// connections, so a burst of logins costs PostgreSQL one backend per
	// session and no more.
	memberConns = 4
	// memberCloseTimeout bounds the Terminate sent to each pooled
	// connection when the emulator closes.
	memberCloseTimeout = time.Second
	// memberAppName is the application_name of those connections;
	// Postgres.ClientBackends leaves them out.
	memberAppName = "rdsproxy-sandbox-iam-check"
)

// errCheckUnavailable marks a membership question that could not be asked
// (PostgreSQL unreachable, the login's deadline passed): the emulator's own
// failure, not a refusal of the user.
var errCheckUnavailable = errors.New("rds iam emulator could not check rds_iam membership")

// memberChecker asks PostgreSQL whether a role is a member of rds_iam over
// memberConns superuser connections on the unix socket, opened at start and
// shared by every login; one that fails is replaced on demand, so the
// emulator holds the same number of connections (and file descriptors)
// however many logins arrive. Nothing is cached: a user removed from
// rds_iam is refused at the next login, as on RDS.
type memberChecker struct {
	dsn   string
	slots chan struct{}       // one token per connection that exists or is being opened
	idle  chan *pgconn.PgConn // open connections not in use; never more than slots
}

func newMemberChecker(dsn string) *memberChecker {
	return &memberChecker{
		dsn:   dsn + " application_name=" + memberAppName,
		slots: make(chan struct{}, memberConns),
		idle:  make(chan *pgconn.PgConn, memberConns),
	}
}

// open fills the pool; on error it closes what it opened.
func (m *memberChecker) open(ctx context.Context) error {
	for range memberConns {
		m.slots <- struct{}{}
		c, err := pgconn.Connect(ctx, m.dsn)
		if err != nil {
			<-m.slots
			m.close(ctx)
			return fmt.Errorf("open rds_iam membership connection: %w", err)
		}
		m.idle <- c
	}
	return nil
}

// check returns nil when user was granted rds_iam, an error saying it was
// not, or an error wrapping errCheckUnavailable when the question could not
// be asked before ctx ended.
func (m *memberChecker) check(ctx context.Context, user string) error {
	notMember := fmt.Errorf("role %q is not a member of %s", limitText(user), RoleRDSIAM)
	if !utf8.ValidString(user) {
		return notMember // no role can have this name in a UTF-8 cluster
	}
	// Walk the grants rather than ask pg_has_role, which is true for every
	// superuser: RDS has none reachable this way, and IAM login needs
	// rds_iam granted, directly or through roles (whatever their INHERIT),
	// to a superuser as to anyone.
	const q = `WITH RECURSIVE m(oid) AS (
		SELECT a.member FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid WHERE g.rolname = $2
		UNION
		SELECT a.member FROM pg_auth_members a JOIN m ON a.roleid = m.oid)
	SELECT EXISTS (SELECT FROM m JOIN pg_roles r ON r.oid = m.oid WHERE r.rolname = $1)`
	for retried := false; ; retried = true {
		conn, reused, err := m.acquire(ctx)
		if err != nil {
			return fmt.Errorf("%w: %w", errCheckUnavailable, err)
		}
		res := conn.ExecParams(ctx, q, [][]byte{[]byte(user), []byte(RoleRDSIAM)}, nil, nil, nil).Read()
		var pgErr *pgconn.PgError
		switch {
		case res.Err == nil:
			m.idle <- conn
			if len(res.Rows) == 1 && len(res.Rows[0]) == 1 && string(res.Rows[0][0]) == "t" {
				return nil
			}
			return notMember
		case errors.As(res.Err, &pgErr):
			m.idle <- conn // the query failed, the connection did not
			return fmt.Errorf("%w: %w", errCheckUnavailable, res.Err)
		}
		m.discard(ctx, conn)
		// A reused connection may have died while idle (PostgreSQL
		// restarted): ask once more on a fresh one.
		if !reused || retried || ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errCheckUnavailable, res.Err)
		}
	}
}

// acquire returns an idle connection (reused) or, when one was discarded,
// opens its replacement, waiting for either until ctx ends.
func (m *memberChecker) acquire(ctx context.Context) (*pgconn.PgConn, bool, error) {
	select {
	case c := <-m.idle:
		return c, true, nil
	default:
	}
	select {
	case c := <-m.idle:
		return c, true, nil
	case m.slots <- struct{}{}:
		c, err := pgconn.Connect(ctx, m.dsn)
		if err != nil {
			<-m.slots
			return nil, false, fmt.Errorf("connect to postgres: %w", err)
		}
		return c, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// discard closes a connection and frees its slot; the Terminate it sends
// is bounded by memberCloseTimeout even when ctx has ended.
func (m *memberChecker) discard(ctx context.Context, c *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), memberCloseTimeout)
	defer cancel()
	_ = c.Close(ctx)
	<-m.slots
}

// close ends the idle connections. Every check must have returned.
func (m *memberChecker) close(ctx context.Context) {
	for {
		select {
		case c := <-m.idle:
			m.discard(ctx, c)
		default:
			return
		}
	}
}
