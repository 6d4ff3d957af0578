package sandbox_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// TestEmulatorMembershipFollowsGrants checks that membership is asked at
// every login, not remembered: a user removed from rds_iam is refused at
// the next login and accepted again once granted, as on RDS.
func TestEmulatorMembershipFollowsGrants(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	super, err := pgx.Connect(ctx, f.pg.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	const user = "iam_temp"
	if _, err := super.Exec(ctx, `CREATE ROLE `+user+` LOGIN IN ROLE `+sandbox.RoleRDSIAM); err != nil {
		t.Fatal(err)
	}
	runGrantSteps(t, f, super, []grantStep{
		{"member", ``, user, true},
		{"revoked", `REVOKE ` + sandbox.RoleRDSIAM + ` FROM ` + user, user, false},
		{"still revoked", ``, user, false},
		{"granted again", `GRANT ` + sandbox.RoleRDSIAM + ` TO ` + user, user, true},
	})
}

// TestEmulatorPostgresDown checks that when the emulator cannot ask
// PostgreSQL about membership it says so, rather than blaming the token
// with RDS's 28P01.
func TestEmulatorPostgresDown(t *testing.T) {
	f := newFixture(t)
	conn, err := f.connect(t, sandbox.UserIAM, freshToken(t, sandbox.UserIAM))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(testCtx(t)) // the membership connection stays open, idle
	if err := f.pg.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = f.connect(t, sandbox.UserIAM, freshToken(t, sandbox.UserIAM))
	wantPgError(t, err, "08006", "the RDS IAM emulator could not check rds_iam membership; see its log")
}

// TestEmulatorMembershipNeedsGrant checks that IAM login follows the
// grants of rds_iam and nothing else: a role granted it through another
// role (even NOINHERIT) logs in; the superuser, which pg_has_role counts as
// a member of every role, is refused like any user without the grant, and
// logs in once it is granted, as an RDS master user would.
func TestEmulatorMembershipNeedsGrant(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	super, err := pgx.Connect(ctx, f.pg.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, sql := range []string{
		`CREATE ROLE iam_group NOLOGIN IN ROLE ` + sandbox.RoleRDSIAM,
		`CREATE ROLE iam_nested LOGIN NOINHERIT IN ROLE iam_group`,
	} {
		if _, err := super.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	runGrantSteps(t, f, super, []grantStep{
		{"granted through a group", ``, "iam_nested", true},
		{"superuser not granted", ``, pgSuper, false},
		{"superuser granted", `GRANT ` + sandbox.RoleRDSIAM + ` TO ` + pgSuper, pgSuper, true},
		{"group revoked", `REVOKE ` + sandbox.RoleRDSIAM + ` FROM iam_group`, "iam_nested", false},
	})
}

// grantStep runs sql as the superuser (when given), then logs in through
// the emulator as user with a valid token: ok says whether it gets in.
type grantStep struct {
	name, sql, user string
	ok              bool
}

// runGrantSteps runs steps in order, each building on the last. A refused
// login gets RDS's 28P01 and the emulator logs the membership reason; an
// accepted one is the user it names.
func runGrantSteps(t *testing.T, f *fixture, super *pgx.Conn, steps []grantStep) {
	t.Helper()
	ctx := testCtx(t)
	for _, st := range steps {
		if st.sql != "" {
			if _, err := super.Exec(ctx, st.sql); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		f.log.take()
		conn, err := f.connect(t, st.user, freshToken(t, st.user))
		if !st.ok {
			wantPgError(t, err, "28P01", fmt.Sprintf(`PAM authentication failed for user "%s"`, st.user))
			if logged := f.log.take(); !strings.Contains(logged, "is not a member of rds_iam") {
				t.Fatalf("%s: emulator log lacks the membership reason:\n%s", st.name, logged)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: connect: %v", st.name, err)
		}
		var who string
		err = conn.QueryRow(ctx, `SELECT current_user`).Scan(&who)
		conn.Close(ctx)
		if err != nil || who != st.user {
			t.Fatalf("%s: current_user = %q, %v; want %s", st.name, who, err, st.user)
		}
	}
}
