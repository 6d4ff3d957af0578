package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/cli"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
)

// rdsproxy doctor against the whole sandbox (moto's STS and EC2, the SSM
// endpoint and agent, the server discovering moto's databases, the RDS IAM
// emulator): every check passes on a healthy setup, and each broken piece
// fails at its own step with its own advice, the checks after it skipped.
// The output never holds the token it signed.
func TestDoctor(t *testing.T) {
	world := startTestWorld(t)
	watcher := newWorldWatcher(t, world)
	serverAddr := startWorldServer(t, world, watcher)
	_, port := splitAddr(t, serverAddr)
	t.Setenv("HOME", t.TempDir()) // no personal ~/.config/rdsproxy/config.yaml
	for _, kv := range world.ClientEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	lost, err := ssmendpoint.Start(context.Background(), ssmendpoint.Config{ConnectionLost: []string{world.Instance}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lost.Close() })
	skewedSTS := fakeSTS(t, 10*time.Minute)
	kubeconfig := func(ready bool) string {
		api, err := kubeapi.Start(kubeapi.Config{Target: serverAddr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(api.Close)
		api.SetReady(ready)
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := api.WriteKubeconfig(path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	kubeReady, kubeNotReady := kubeconfig(true), kubeconfig(false)

	// The client's STS is the one the server verifies identities with, so
	// both name the same caller (moto's named everyone user/moto).
	identity := `^✓ AWS credentials: ` + regexp.QuoteMeta(sandbox.PrincipalUser.ARN) + ` \(credentials from EnvConfigCredentials\)$`
	const (
		clock  = `^✓ clock skew: this machine's clock agrees with AWS's \(within 1s\)$`
		found  = `^✓ server found: i-\w+ \(tagged rdsproxy:server=sandbox\), SSM agent 3\.3\.987\.0 online$`
		tunnel = `^✓ tunnel opens: --via ssm; the server answers$`
		token  = `^✓ token can be signed: for user `
		fix    = `^  fix: `
	)
	answers := `^✓ server answers: ` + strconv.Itoa(len(watcher.Current().Targets())) + ` targets$`
	listed := func(name string) string { return `^✓ target listed: ` + name + ` → \S+:5432 in us-east-1$` }
	skip := func(name string) string { return `^- ` + name + `: skipped$` }
	direct := []string{"--via", "direct", "--server", serverAddr}
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		code  int
		lines []string
	}{
		{"all pass", []string{"orders", "--user", sandbox.UserIAM}, nil, cli.ExitOK, []string{
			identity, clock, found, tunnel, answers, listed("orders"), token + sandbox.UserIAM + ` at orders\.`,
			`^✓ test login: logged in to orders as iam_user \(SELECT current_user\)$`}},
		{"user defaults to the target's first rdsproxy:users", []string{"orders"}, nil, cli.ExitOK, []string{
			identity, clock, found, tunnel, answers, listed("orders"), token + sandbox.UserIAM + ` at orders\.`,
			`^✓ test login: logged in to orders as iam_user`}},
		{"via direct", append([]string{"orders"}, direct...), nil, cli.ExitOK, []string{
			identity, clock, `^✓ server found: TCP connection to ` + regexp.QuoteMeta(serverAddr) + `$`,
			`^✓ tunnel opens: --via direct; the server answers$`, answers, listed("orders"), token + sandbox.UserIAM,
			`^✓ test login: logged in to orders as iam_user`}},
		{"via direct, nothing listening", append([]string{"orders"}, "--via", "direct", "--server", closedAddr()), nil, cli.ExitFailure, []string{
			identity, clock, `^✗ server found: cannot connect to 127\.0\.0\.1:\d+: .*connection refused$`,
			fix + `check the address, that the server is running`,
			skip("tunnel opens"), skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
		{"via kube", []string{"orders", "--via", "kube", "--kubeconfig", kubeReady}, nil, cli.ExitOK, []string{
			identity, clock, `^✓ server found: a ready pod of deployment rdsproxy in namespace default$`,
			`^✓ tunnel opens: --via kube; the server answers$`, answers, listed("orders"), token + sandbox.UserIAM,
			`^✓ test login: logged in to orders as iam_user`}},
		{"via kube, no ready pod", []string{"orders", "--via", "kube", "--kubeconfig", kubeNotReady}, nil, cli.ExitFailure, []string{
			identity, clock, `^✗ server found: kube: no ready pod for deployment rdsproxy in namespace default \(1 pods match app=rdsproxy: rdsproxy-\d+ \(Running, not ready\)\)$`,
			fix + `check --kube-context and --kube-namespace, that the server's pods are running and ready`,
			skip("tunnel opens"), skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
		{"no target", nil, nil, cli.ExitOK, []string{
			identity, clock, found, tunnel, answers, `^- target listed: skipped \(no TARGET given\)$`,
			skip("token can be signed"), skip("test login")}},
		{"user without rds_iam", []string{"analytics", "--user", sandbox.UserNoIAM}, nil, cli.ExitFailure, []string{
			identity, clock, found, tunnel, answers, listed("analytics"), token + sandbox.UserNoIAM + ` at analytics\.`,
			`^✗ test login: the database refused the IAM token for noiam_user \(PAM authentication failed for user "noiam_user"\)$`,
			`^  fix: grant it rds_iam \(GRANT rds_iam TO noiam_user\) and allow rds-db:connect for noiam_user in your IAM policy$`}},
		{"user not in rdsproxy:users", []string{"orders", "--user", sandbox.UserNoIAM}, nil, cli.ExitFailure, []string{
			identity, clock, found, tunnel, answers, listed("orders"), token + sandbox.UserNoIAM,
			`^✗ test login: target "orders" does not allow database user "noiam_user"; allowed users: iam_user, iam_other$`,
			`^  fix: log in as one of iam_user, iam_other \(--user\), or add noiam_user to the database's rdsproxy:users tag$`}},
		{"target not listed", []string{"order"}, nil, cli.ExitFailure, []string{
			identity, clock, found, tunnel, answers,
			`^✗ target listed: the server has no target "order"; did you mean orders`, fix + "run `rdsproxy list`",
			skip("token can be signed"), skip("test login")}},
		{"server instance untagged", []string{"orders", "--ssm-server", "other"}, nil, cli.ExitFailure, []string{
			identity, clock,
			`^✗ server found: no running EC2 instance is tagged rdsproxy:server=other in us-east-1$`,
			fix + `tag the server's instance rdsproxy:server=other \(the Terraform module does\), or name the right server with --ssm-server`,
			skip("tunnel opens"), skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
		{"clock 10 minutes behind AWS", []string{"orders"}, map[string]string{"AWS_ENDPOINT_URL_STS": skewedSTS}, cli.ExitFailure, []string{
			`^✓ AWS credentials: arn:aws:iam::123456789012:user/skewed `,
			`^✗ clock skew: this machine's clock is (9m59s|10m0s|10m1s) behind AWS's; IAM tokens will be rejected$`,
			`^  fix: sync this machine's clock \(e\.g\. timedatectl set-ntp true\)$`,
			found, tunnel, answers, listed("orders"), token + sandbox.UserIAM, `^✓ test login: logged in to orders as iam_user`}},
		{"nothing listens on --ssm-port", []string{"orders", "--ssm-port", portOf(t, closedAddr())}, nil, cli.ExitFailure, []string{
			identity, clock, found,
			`^✗ tunnel opens: the server did not answer a probe: the SSM agent could not connect to the destination port \d+ on the target \(is the rdsproxy server listening there\?\)$`,
			fix + `check that you may ssm:StartSession on i-\w+ with the document AWS-StartPortForwardingSession, and that the server listens on port \d+ there \(--ssm-port\)$`,
			skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
		{"credentials refused by STS", []string{"orders"}, map[string]string{"AWS_ENDPOINT_URL_STS": refusingSTS(t)}, cli.ExitFailure, []string{
			`^✗ AWS credentials: AWS STS refused the credentials \(InvalidClientTokenId: The security token included in the request is invalid\.\)$`,
			fix + "set --profile or AWS_PROFILE to a profile with credentials \\(run `aws sso login --profile NAME` for an SSO profile\\)",
			skip("clock skew"), skip("server found"), skip("tunnel opens"), skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
		{"no credentials", []string{"orders", "--via", "direct", "--server", serverAddr}, map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, cli.ExitFailure, []string{
			`^✗ AWS credentials: no usable AWS credentials: `, fix + "set --profile or AWS_PROFILE",
			skip("clock skew"), `^✓ server found: TCP connection to `, `^✓ tunnel opens: --via direct; the server answers$`, answers, listed("orders"),
			skip("token can be signed"), skip("test login")}},
		{"agent connection lost", []string{"orders"}, map[string]string{"AWS_ENDPOINT_URL_SSM": lost.URL()}, cli.ExitFailure, []string{
			identity, clock,
			`^✗ server found: the SSM agent on i-\w+ \(tagged rdsproxy:server=sandbox\) is ConnectionLost$`,
			fix + `make sure the SSM agent runs on the instance .* AmazonSSMManagedInstanceCore`,
			skip("tunnel opens"), skip("server answers"), skip("target listed"), skip("token can be signed"), skip("test login")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"doctor", "--log-level", "error", "--ssm-server", sandbox.WorldServer, "--ssm-port", port}, tc.args...)
			var out bytes.Buffer
			start := time.Now()
			code := cli.Run(args, cli.Env{Stdout: &out, Stderr: &out, Version: "test"})
			end := time.Now()
			t.Logf("rdsproxy %s\n%s", strings.Join(args, " "), out.String())
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if code != cli.ExitFailure {
				lines = append(lines, "") // the failure summary line is absent
			}
			if code != tc.code || len(lines) != len(tc.lines)+1 {
				t.Fatalf("exit %d (want %d), %d lines (want %d):\n%s", code, tc.code, len(lines), len(tc.lines)+1, out.String())
			}
			for i, re := range tc.lines {
				if !regexp.MustCompile(re).MatchString(lines[i]) {
					t.Errorf("line %d = %q, want /%s/", i+1, lines[i], re)
				}
			}
			if code == cli.ExitFailure && !strings.HasPrefix(lines[len(lines)-1], "rdsproxy: doctor: 1 check of ") {
				t.Errorf("last line %q, want the failure summary", lines[len(lines)-1])
			}
			assertNoDoctorToken(t, world, out.String(), tc.args, start, end)
			if st := world.SSM.Stats(); st.TerminateCalls != st.SessionsStarted {
				t.Errorf("SSM sessions started %d, TerminateSession calls %d: the doctor left a session open", st.SessionsStarted, st.TerminateCalls)
			}
		})
	}
}

// assertNoDoctorToken signs, for every second the doctor ran, the token it
// would have signed (SigV4 is deterministic) and fails if its signature
// shows in the output or the logs.
func assertNoDoctorToken(t *testing.T, world *sandbox.World, out string, args []string, start, end time.Time) {
	t.Helper()
	if strings.Contains(out, "X-Amz-Signature") || strings.Contains(out, "X-Amz-Credential") {
		t.Fatalf("doctor output holds a token:\n%s", out)
	}
	if len(args) == 0 {
		return
	}
	var endpoints []string // the target's endpoints (a cluster has two)
	for endpoint := range world.DialMap {
		if strings.HasPrefix(endpoint, args[0]+".") && strings.Contains(endpoint, "."+sandbox.Region+".") {
			endpoints = append(endpoints, endpoint)
		}
	}
	user := sandbox.UserIAM
	for i, a := range args {
		if a == "--user" {
			user = args[i+1]
		}
	}
	logs := sb.logs.String()
	for _, endpoint := range endpoints {
		for at := start.Truncate(time.Second); !at.After(end); at = at.Add(time.Second) {
			tok, err := iamtoken.SignAt(context.Background(), endpoint, sandbox.Region, user, sandbox.Credentials(), at, iamtoken.DefaultLifetime)
			if err != nil {
				t.Fatal(err)
			}
			_, sig, _ := strings.Cut(tok, "X-Amz-Signature=")
			if strings.Contains(out, sig) || strings.Contains(logs, sig) {
				t.Fatalf("the doctor's token for %s (signed at %s) is in its output or the logs", endpoint, at.Format(time.RFC3339))
			}
		}
	}
}

// fakeSTS answers GetCallerIdentity on loopback with a Date header offset
// from this machine's clock.
func fakeSTS(t *testing.T, offset time.Duration) string {
	t.Helper()
	return serveSTS(t, func(w http.ResponseWriter) {
		w.Header().Set("Date", time.Now().Add(offset).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>`+
			`<Arn>arn:aws:iam::123456789012:user/skewed</Arn><UserId>AIDASKEWED</UserId><Account>123456789012</Account>`+
			`</GetCallerIdentityResult><ResponseMetadata><RequestId>skewed-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>`)
	})
}

// refusingSTS answers GetCallerIdentity as STS does for an unknown key.
func refusingSTS(t *testing.T) string {
	t.Helper()
	return serveSTS(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>`+
			`<Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message>`+
			`</Error><RequestId>refused-1</RequestId></ErrorResponse>`)
	})
}

func serveSTS(t *testing.T, answer func(http.ResponseWriter)) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func portOf(t *testing.T, addr string) string {
	_, port := splitAddr(t, addr)
	return port
}
