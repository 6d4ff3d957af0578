package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
)

// The clock check passes within 1 s (a Date header's resolution), reports
// the skew up to 5 minutes, and fails beyond with the NTP advice.
func TestDoctorClockSkew(t *testing.T) {
	server := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		skew       time.Duration
		want, fail string
	}{
		{0, "agrees with AWS's (within 1s)", ""},
		{900 * time.Millisecond, "agrees with AWS's (within 1s)", ""},
		{-time.Second, "agrees with AWS's (within 1s)", ""},
		{42 * time.Second, "is 42s ahead of AWS's (tokens are rejected beyond 5m0s)", ""},
		{-4 * time.Minute, "is 4m0s behind AWS's", ""},
		{5 * time.Minute, "is 5m0s ahead of AWS's", ""},
		{5*time.Minute + 2*time.Second, "", "is 5m2s ahead of AWS's; IAM tokens will be rejected"},
		{-time.Hour, "", "is 1h0m0s behind AWS's; IAM tokens will be rejected"},
	}
	for _, tc := range tests {
		detail, err := clockSkew(server.Add(tc.skew), server)
		var p *problem
		switch {
		case tc.fail == "" && (err != nil || !strings.Contains(detail, tc.want)):
			t.Errorf("skew %s: %q, %v; want %q", tc.skew, detail, err, tc.want)
		case tc.fail != "" && (!errors.As(err, &p) || !strings.Contains(p.what, tc.fail) || !strings.Contains(p.fix, "timedatectl set-ntp true")):
			t.Errorf("skew %s: %q, %v; want failure %q", tc.skew, detail, err, tc.fail)
		}
	}
}

// Each database or server answer to the test login becomes plain words
// and a fix, chosen by SQLSTATE and rdsproxy's reason (the Routine
// field), never by the message; the server's own sentence and hint pass
// through.
func TestDoctorExplainLogin(t *testing.T) {
	target := contract.Target{Name: "orders", Users: []string{"alice", "bob"}}
	tests := []struct {
		name      string
		err       error
		what, fix string
	}{
		{"no rds_iam", &pgconn.PgError{Code: "28P01", Message: `PAM authentication failed for user "carol"`, Routine: "auth_failed"},
			`the database refused the IAM token for carol (PAM authentication failed for user "carol")`,
			"grant it rds_iam (GRANT rds_iam TO carol) and allow rds-db:connect for carol in your IAM policy"},
		{"user not allowed", &pgconn.PgError{Code: "28000", Message: `rdsproxy: target "orders" does not allow database user "carol"; allowed users: alice, bob`, Routine: "rdsproxy:user-not-allowed"},
			`target "orders" does not allow database user "carol"; allowed users: alice, bob`,
			"log in as one of alice, bob (--user), or add carol to the database's rdsproxy:users tag"},
		{"token pre-validation", &pgconn.PgError{Code: "28P01", Message: "rdsproxy: IAM token rejected: token expired 5m0s ago", Hint: "The password must be a fresh RDS IAM token.", Routine: "rdsproxy:token-expired"},
			"the server refused the token: IAM token rejected: token expired 5m0s ago", "The password must be a fresh RDS IAM token."},
		{"database unreachable", &pgconn.PgError{Code: "08001", Message: `rdsproxy: cannot reach target "orders" at 10.0.0.1:5432: connection refused`,
			Hint: "Check that the database is available and that the server's security group may reach it."},
			`the server cannot reach the database: cannot reach target "orders" at 10.0.0.1:5432: connection refused`,
			"Check that the database is available and that the server's security group may reach it."},
		{"another 28000 of rdsproxy's, whatever its words", &pgconn.PgError{Code: "28000", Message: "rdsproxy: does not allow database user", Hint: "Ask for access.", Routine: "rdsproxy:principal-not-allowed"},
			"the login failed with 28000: does not allow database user", "Ask for access."},
		{"other SQLSTATE", &pgconn.PgError{Code: "53300", Message: "too many connections"},
			"the login failed with 53300: too many connections", "read the server's log"},
		{"wrapped", fmt.Errorf("connect: %w", &pgconn.PgError{Code: "08001", Message: "x"}),
			"the server cannot reach the database: x", "check the database's status"},
		{"not a database answer", errors.New("unexpected EOF"), "the login did not complete: unexpected EOF", "check the server's log"},
	}
	for _, tc := range tests {
		p := explainLogin(tc.err, target, "carol")
		if p.what != tc.what || !strings.HasPrefix(p.fix, tc.fix) {
			t.Errorf("%s:\n got %q / %q\nwant %q / %q…", tc.name, p.what, p.fix, tc.what, tc.fix)
		}
	}
}

// A check runs only when the checks it needs passed; the others print
// "skipped", and the count of failures is returned.
func TestDoctorRunChecks(t *testing.T) {
	ok := func(context.Context) (string, error) { return "fine", nil }
	bad := func(context.Context) (string, error) { return "", fail("do this", "broken") }
	na := func(context.Context) (string, error) { return "", &skipped{"not asked"} }
	var out bytes.Buffer
	n := runChecks(t.Context(), &out, []doctorCheck{
		{"a", nil, ok}, {"b", []int{0}, bad}, {"c", []int{0}, ok}, {"d", []int{1}, ok},
		{"e", []int{2}, na}, {"f", []int{4}, ok}, {"g", nil, func(context.Context) (string, error) { return "", errors.New("raw") }},
	})
	want := "✓ a: fine\n✗ b: broken\n  fix: do this\n✓ c: fine\n- d: skipped\n- e: skipped (not asked)\n- f: skipped\n✗ g: raw\n  fix: unexpected; run again with --log-level debug and report it\n"
	if n != 2 || out.String() != want {
		t.Errorf("failed %d, output:\n%s\nwant 2, output:\n%s", n, out.String(), want)
	}
	// Interrupted (Ctrl-C): the checks left are not run.
	ctx, cancel := context.WithCancel(t.Context())
	out.Reset()
	n = runChecks(ctx, &out, []doctorCheck{
		{"a", nil, func(context.Context) (string, error) { cancel(); return "fine", nil }}, {"b", nil, bad},
	})
	if want := "✓ a: fine\n- b: skipped (interrupted)\n"; n != 0 || out.String() != want {
		t.Errorf("interrupted: failed %d, output:\n%s\nwant 0, output:\n%s", n, out.String(), want)
	}
}

// When the server answers that it cannot serve its list yet, doctor says
// to wait and why, not to check the port.
func TestDoctorListFix(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errors.New("dial tcp: connection refused"), "check that the port is rdsproxy server's"},
		{&client.ListRefused{Status: http.StatusNotFound}, "check that the port is rdsproxy server's"},
		{&client.ListRefused{Status: http.StatusServiceUnavailable}, "cannot serve yet"},
		{&client.ListRefused{Status: http.StatusServiceUnavailable, Reason: "identity-sts-unreachable"}, "cannot reach AWS STS"},
	} {
		if got := listFix(tt.err); !strings.Contains(got, tt.want) {
			t.Errorf("listFix(%#v) = %q, want it to say %q", tt.err, got, tt.want)
		}
	}
}
