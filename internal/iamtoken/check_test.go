package iamtoken_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

func TestCheck(t *testing.T) {
	const user = "app_user"
	creds := testCreds("")
	sign := func(endpoint, region, user string) string {
		return mustSign(t, endpoint, region, user, creds, testTime, 15*time.Minute)
	}
	base := iamtoken.Expect{Endpoint: testEndpoint, User: user, Region: testRegion, Now: testTime.Add(time.Minute)}
	with := func(f func(*iamtoken.Expect)) iamtoken.Expect { e := base; f(&e); return e }
	good := sign(testEndpoint, testRegion, user)
	host, query, _ := strings.Cut(good, "?")

	tests := []struct {
		name       string
		token      string
		expect     iamtoken.Expect
		wantReason string // empty: accepted
		wantMsg    string
	}{
		{"valid", good, base, "", ""},
		{"host case-insensitive", good, with(func(e *iamtoken.Expect) { e.Endpoint = strings.ToUpper(testEndpoint) }), "", ""},
		{"no region expected", good, with(func(e *iamtoken.Expect) { e.Region = "" }), "", ""},
		{"at expiry", good, with(func(e *iamtoken.Expect) { e.Now = testTime.Add(15 * time.Minute) }), "", ""},
		{"expired within skew", good, with(func(e *iamtoken.Expect) {
			e.Now, e.Skew = testTime.Add(16*time.Minute), 2*time.Minute
		}), "", ""},
		{"future within skew", good, with(func(e *iamtoken.Expect) {
			e.Now, e.Skew = testTime.Add(-time.Minute), 2*time.Minute
		}), "", ""},
		{"wrong host", sign("b.example:5432", testRegion, user),
			with(func(e *iamtoken.Expect) { e.Endpoint = "a.example:5432" }), iamtoken.ReasonHost,
			"token was signed for host b.example:5432 but the target is a.example:5432"},
		{"wrong port", good, with(func(e *iamtoken.Expect) { e.Endpoint = "db1.abc.us-east-1.rds.amazonaws.com:5433" }),
			iamtoken.ReasonHost,
			"token was signed for host " + testEndpoint + " but the target is db1.abc.us-east-1.rds.amazonaws.com:5433"},
		{"wrong user", sign(testEndpoint, testRegion, "x"), with(func(e *iamtoken.Expect) { e.User = "y" }),
			iamtoken.ReasonUser, `token is for DB user "x" but the connection is for user "y"`},
		{"user case matters", good, with(func(e *iamtoken.Expect) { e.User = "APP_USER" }),
			iamtoken.ReasonUser, `token is for DB user "app_user" but the connection is for user "APP_USER"`},
		{"wrong region", sign(testEndpoint, "eu-west-1", user), base,
			iamtoken.ReasonRegion, "token is for region eu-west-1 but the target is in us-east-1"},
		{"expired", good, with(func(e *iamtoken.Expect) { e.Now = testTime.Add(18 * time.Minute) }),
			iamtoken.ReasonExpired, "token expired 3m0s ago; sign a fresh one"},
		{"expired beyond skew", good, with(func(e *iamtoken.Expect) {
			e.Now, e.Skew = testTime.Add(18*time.Minute), time.Minute
		}), iamtoken.ReasonExpired, "token expired 3m0s ago; sign a fresh one"},
		{"signed 24h ago with a 7-day lifetime", mustSign(t, testEndpoint, testRegion, user, creds, testTime.Add(-24*time.Hour), 7*24*time.Hour),
			base, iamtoken.ReasonLifetime, "token claims a lifetime of 168h0m0s (X-Amz-Expires); RDS tokens live at most 15m0s, sign one with the default lifetime"},
		{"a 16-minute lifetime", mustSign(t, testEndpoint, testRegion, user, creds, testTime, 16*time.Minute),
			base, iamtoken.ReasonLifetime, "token claims a lifetime of 16m0s (X-Amz-Expires); RDS tokens live at most 15m0s, sign one with the default lifetime"},
		{"future", good, with(func(e *iamtoken.Expect) { e.Now = testTime.Add(-10 * time.Minute) }),
			iamtoken.ReasonNotYetValid, "token is dated 10m0s in the future; check this machine's clock"},
		{"action", host + "?" + strings.Replace(query, "Action=connect", "Action=x", 1), base,
			iamtoken.ReasonAction, `token action is "x", not connect`},
		{"service", host + "?" + strings.Replace(query, "%2Frds-db%2F", "%2Fs3%2F", 1), base,
			iamtoken.ReasonService, "token is not for the rds-db service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := iamtoken.Parse(tt.token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = tok.Check(tt.expect)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var e *iamtoken.Error
			if !errors.As(err, &e) {
				t.Fatalf("Check = %v, want *iamtoken.Error", err)
			}
			if e.Reason != tt.wantReason || e.Msg != tt.wantMsg || err.Error() != tt.wantMsg {
				t.Errorf("Check = {%q, %q}, want {%q, %q}", e.Reason, e.Msg, tt.wantReason, tt.wantMsg)
			}
		})
	}
}
