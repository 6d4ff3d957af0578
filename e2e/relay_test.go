package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// psql through both hops with no password; current_user is the IAM user.
func TestPsqlThroughBothHops(t *testing.T) {
	st := startStack(t)
	out, err := psql(t, context.Background(), st.local["app"], sandbox.UserIAM, "-c", "SELECT current_user, current_database()")
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != sandbox.UserIAM+"|"+sandbox.DatabaseApp {
		t.Fatalf("psql printed %q", out)
	}
}

// pgx's simple, extended and prepared-statement protocols all work.
func TestPgxProtocols(t *testing.T) {
	st := startStack(t)
	modes := map[string]pgx.QueryExecMode{
		"simple":   pgx.QueryExecModeSimpleProtocol,
		"exec":     pgx.QueryExecModeExec,
		"prepared": pgx.QueryExecModeCacheStatement,
		"describe": pgx.QueryExecModeDescribeExec,
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			cfg := localConfig(t, st.local["app"], sandbox.UserIAM)
			cfg.DefaultQueryExecMode = mode
			conn, err := pgx.ConnectConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			for i := range 3 { // the third run uses the cached statement
				var user string
				var n int
				if err := conn.QueryRow(context.Background(), "SELECT current_user, $1::int + 1", i).Scan(&user, &n); err != nil {
					t.Fatal(err)
				}
				if user != sandbox.UserIAM || n != i+1 {
					t.Fatalf("got %q %d", user, n)
				}
			}
		})
	}
}

// The target list the client fetches through the tunnel is the server's snapshot.
func TestTargetListMatchesSnapshot(t *testing.T) {
	st := startStack(t)
	tun, _ := tunnel.NewDirect(st.serverAddr, 0)
	got, err := client.FetchTargetList(context.Background(), tun, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st.snap.Targets(), got.Targets); diff != "" {
		t.Fatalf("target list (-snapshot +fetched):\n%s", diff)
	}
}

// rdsproxy:read-only starts sessions read-only: a write fails through the
// read-only target and succeeds through the normal one.
func TestReadOnlyTarget(t *testing.T) {
	st := startStack(t)
	ctx := context.Background()
	rw := connectLocal(t, st.local["app"], sandbox.UserIAM)
	if _, err := rw.Exec(ctx, "CREATE TABLE IF NOT EXISTS ro_probe (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := rw.Exec(ctx, "INSERT INTO ro_probe VALUES (1)"); err != nil {
		t.Fatalf("write through the normal target: %v", err)
	}
	ro := connectLocal(t, st.local["ro"], sandbox.UserIAM)
	_, err := ro.Exec(ctx, "INSERT INTO ro_probe VALUES (2)")
	pgErr(t, err, "25006", "read-only transaction")
	var n int
	if err := ro.QueryRow(ctx, "SELECT count(*) FROM ro_probe").Scan(&n); err != nil || n < 1 {
		t.Fatalf("read through the read-only target: %d, %v", n, err)
	}
}

// A passthrough target relays SCRAM end to end: the client's own password
// reaches PostgreSQL, and a wrong one is refused by PostgreSQL itself.
func TestPassthroughSCRAM(t *testing.T) {
	st := startStack(t)
	ctx := context.Background()
	cfg := serverConfig(t, st.serverAddr, "plain", sandbox.UserPassword, sandbox.PasswordOfPW)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("SCRAM through the server: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != sandbox.UserPassword {
		t.Fatalf("current_user = %q, %v", user, err)
	}
	conn.Close(ctx)
	cfg.Password = "wrong"
	_, err = pgx.ConnectConfig(ctx, cfg)
	pgErr(t, err, "28P01", "password authentication failed")
}

// Any PostgreSQL client holding a token can use the server directly, naming
// the target in options (for clients that cannot add startup parameters).
func TestServerDirectWithOptions(t *testing.T) {
	st := startStack(t)
	cfg := serverConfig(t, st.serverAddr, "", sandbox.UserIAM, sb.tokens.sign(t, appEndpoint, sandbox.UserIAM, nowUTC()))
	delete(cfg.RuntimeParams, "rdsproxy.target")
	cfg.RuntimeParams["options"] = "-c rdsproxy.target=app -c application_name=opt"
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var app string
	if err := conn.QueryRow(context.Background(), "SHOW application_name").Scan(&app); err != nil || app != "opt" {
		t.Fatalf("application_name = %q, %v", app, err)
	}
}
