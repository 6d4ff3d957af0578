package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// DoctorCmd checks, step by step, everything a connection needs: AWS
// identity, clock, the server, the tunnel, the target list, a token and a
// test login. Each check prints one line (✓, ✗ with a fix, or - when a
// check it needs failed); the exit code is 1 when any check failed.
type DoctorCmd struct {
	Target string `arg:"" optional:"" name:"target" help:"Target to test a login to (default: check up to the target list)."`
	TunnelFlags
	User string `help:"Database user for the test login (default: the target's first rdsproxy:users, else $USER)." env:"RDSPROXY_USER"`
}

// maxClockSkew is how far the local clock may be from AWS's before the
// IAM tokens it signs are rejected (SigV4 allows 5 minutes).
const maxClockSkew = 5 * time.Minute

// doctorStepTimeout bounds each check.
const doctorStepTimeout = 60 * time.Second

// Check indexes, in the order they run.
const (
	checkIdentity = iota
	checkClock
	checkServer
	checkTunnel
	checkAnswers
	checkTarget
	checkToken
	checkLogin
)

// problem is a failed check: what is wrong and what to do about it.
type problem struct{ what, fix string }

func (p *problem) Error() string { return p.what }

func fail(fix, format string, args ...any) *problem {
	return &problem{what: fmt.Sprintf(format, args...), fix: fix}
}

// skipped marks a check that does not apply; the reason is printed.
type skipped struct{ why string }

func (s *skipped) Error() string { return s.why }

type doctorCheck struct {
	name  string
	needs []int // checks that must have passed first
	run   func(ctx context.Context) (string, error)
}

// doctor holds what the checks learn, for the checks after them.
type doctor struct {
	cmd       *DoctorCmd
	log       *slog.Logger
	aws       aws.Config
	identity  *sts.GetCallerIdentityOutput
	instance  string
	tun       tunnel.Tunnel
	serverTLS *tls.Config
	targets   []contract.Target
	target    contract.Target
	user      string
	token     string               // never printed or logged
	server    *callerid.ServerInfo // the server's identity check, nil when it has none
	ids       client.Identities
}

// Run runs the checks and prints one line per check on stdout.
func (c *DoctorCmd) Run(ctx context.Context, log *slog.Logger, env Env) error {
	d := &doctor{cmd: c, log: log}
	defer d.close()
	checks := d.checks()
	failed := runChecks(ctx, env.Stdout, checks)
	if ctx.Err() != nil {
		return &ExitError{Code: ExitFailure, Err: errors.New("doctor: interrupted")}
	}
	if failed > 0 {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("doctor: %s of %d failed", plural(failed, "check"), len(checks))}
	}
	return nil
}

func (d *doctor) checks() []doctorCheck {
	serverNeeds := []int{}
	if d.cmd.Via == "ssm" {
		serverNeeds = []int{checkIdentity}
	}
	return []doctorCheck{
		checkIdentity: {"AWS credentials", nil, d.checkIdentity},
		checkClock:    {"clock skew", []int{checkIdentity}, d.checkClock},
		checkServer:   {"server found", serverNeeds, d.checkServer},
		checkTunnel:   {"tunnel opens", []int{checkServer}, d.checkTunnel},
		checkAnswers:  {"server answers", []int{checkTunnel}, d.checkAnswers},
		checkTarget:   {"target listed", []int{checkAnswers}, d.checkTarget},
		checkToken:    {"token can be signed", []int{checkIdentity, checkTarget}, d.checkToken},
		checkLogin:    {"test login", []int{checkTunnel, checkToken}, d.checkLogin},
	}
}

// runChecks runs checks in order, skipping those whose needs did not pass,
// prints their lines and returns how many failed.
func runChecks(ctx context.Context, w io.Writer, checks []doctorCheck) int {
	passed := make([]bool, len(checks))
	failed := 0
	for i, c := range checks {
		ready := true
		for _, n := range c.needs {
			ready = ready && passed[n]
		}
		if !ready {
			fmt.Fprintf(w, "- %s: skipped\n", c.name)
			continue
		}
		if ctx.Err() != nil {
			fmt.Fprintf(w, "- %s: skipped (interrupted)\n", c.name)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, doctorStepTimeout)
		detail, err := c.run(cctx)
		cancel()
		var p *problem
		var s *skipped
		switch {
		case err == nil:
			passed[i] = true
			fmt.Fprintf(w, "✓ %s: %s\n", c.name, detail)
		case errors.As(err, &s):
			fmt.Fprintf(w, "- %s: skipped (%s)\n", c.name, s.why)
		case errors.As(err, &p):
			failed++
			fmt.Fprintf(w, "✗ %s: %s\n  fix: %s\n", c.name, p.what, p.fix)
		default:
			failed++
			fmt.Fprintf(w, "✗ %s: %v\n  fix: unexpected; run again with --log-level debug and report it\n", c.name, err)
		}
	}
	return failed
}

func (d *doctor) close() {
	if d.tun != nil {
		d.tun.Close()
	}
}

// checkIdentity loads the SDK configuration and asks STS who we are.
func (d *doctor) checkIdentity(ctx context.Context) (string, error) {
	fix := credentialsFix(d.cmd.Profile)
	cfg, err := d.cmd.awsConfig(ctx)
	if err != nil {
		return "", fail(fix, "%v", err)
	}
	d.aws = cfg
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return "", fail(fix, "no usable AWS credentials: %v", err)
	}
	if cfg.Region == "" {
		return "", fail("pass --region, set AWS_REGION, or set region in your AWS profile", "no AWS region is configured")
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", stsProblem(err, fix)
	}
	d.identity = out
	return fmt.Sprintf("%s (credentials from %s)", aws.ToString(out.Arn), creds.Source), nil
}

// stsProblem explains a GetCallerIdentity failure.
func stsProblem(err error, fix string) *problem {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return fail("check your network access to AWS STS (proxy, VPN, AWS_ENDPOINT_URL_STS)", "cannot reach AWS STS: %v", err)
	}
	switch code := ae.ErrorCode(); code {
	case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
		return fail("refresh your credentials (`aws sso login` for SSO profiles) and try again", "your AWS session has expired (%s)", code)
	case "SignatureDoesNotMatch":
		return fail("check AWS_SECRET_ACCESS_KEY or the profile's secret key; if the keys are right, sync this machine's clock", "AWS rejected the request signature (%s: %s)", code, ae.ErrorMessage())
	default:
		return fail(fix, "AWS STS refused the credentials (%s: %s)", code, ae.ErrorMessage())
	}
}

// checkClock compares the local clock with the Date of STS's answer.
func (d *doctor) checkClock(context.Context) (string, error) {
	server, ok := awsmiddleware.GetServerTime(d.identity.ResultMetadata)
	local, ok2 := awsmiddleware.GetResponseAt(d.identity.ResultMetadata)
	if !ok || !ok2 {
		return "", fail("check the clock by hand (timedatectl status) against an NTP server",
			"AWS STS's answer carried no Date header, so the clock skew cannot be measured")
	}
	return clockSkew(local, server)
}

// clockSkew judges the local clock at the moment AWS said server. Date
// headers have a resolution of one second.
func clockSkew(local, server time.Time) (string, error) {
	skew := local.Sub(server)
	size := skew.Abs().Round(time.Second)
	if size <= time.Second {
		return "this machine's clock agrees with AWS's (within 1s)", nil
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	if skew.Abs() > maxClockSkew {
		return "", fail("sync this machine's clock (e.g. timedatectl set-ntp true)",
			"this machine's clock is %s %s AWS's; IAM tokens will be rejected", size, dir)
	}
	return fmt.Sprintf("this machine's clock is %s %s AWS's (tokens are rejected beyond %s)", size, dir, maxClockSkew), nil
}

// checkServer finds the server: its instance and SSM status, a ready pod,
// or a TCP connection to --server.
func (d *doctor) checkServer(ctx context.Context) (string, error) {
	f := &d.cmd.TunnelFlags
	switch f.Via {
	case "ssm":
		return d.findSSMServer(ctx)
	case "kube":
		return d.findKubeServer(ctx)
	default:
		if f.Server == "" {
			return "", fail("pass --server HOST:PORT (or RDSPROXY_SERVER)", "--via direct needs the server's address")
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.Server)
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // the message names the address already
		}
		if err != nil {
			return "", fail("check the address, that the server is running, and that your network (VPN, peering, security group) reaches it",
				"cannot connect to %s: %v", f.Server, err)
		}
		conn.Close()
		return "TCP connection to " + f.Server, nil
	}
}

// findKubeServer opens the kube tunnel and one port-forward stream, which
// is when it picks a ready pod.
func (d *doctor) findKubeServer(ctx context.Context) (string, error) {
	f := &d.cmd.TunnelFlags
	tun, cfg, err := f.open(ctx, d.log)
	if err == nil {
		d.tun, d.serverTLS = tun, cfg
		var c net.Conn
		if c, err = tun.Dial(ctx); err == nil {
			c.Close()
		}
	}
	if err != nil {
		return "", fail("check --kube-context and --kube-namespace, that the server's pods are running and ready (kubectl get pods), and that you may list pods and create pods/portforward",
			"%v", err)
	}
	of := "deployment " + f.KubeDeployment
	if f.KubeSelector != "" {
		of = "pods matching " + f.KubeSelector
	}
	if kt, ok := tun.(*kube.Tunnel); ok {
		of += " in namespace " + kt.Namespace()
	}
	return "a ready pod of " + of, nil
}

func (d *doctor) findSSMServer(ctx context.Context) (string, error) {
	f := &d.cmd.TunnelFlags
	id, how := f.SSMTarget, "--ssm-target"
	if id == "" {
		var err error
		id, err = ssmtun.FindInstance(ctx, ec2.NewFromConfig(d.aws), f.SSMServer)
		tag := ssmtun.ServerTag + "=" + f.SSMServer
		if errors.Is(err, ssmtun.ErrNoInstance) {
			return "", fail(fmt.Sprintf("tag the server's instance %s (the Terraform module does), or name the right server with --ssm-server, or the instance with --ssm-target i-…; check that your profile and --region are the server's account and region", tag),
				"no running EC2 instance is tagged %s in %s", tag, d.aws.Region)
		}
		if err != nil {
			return "", fail("allow ec2:DescribeInstances, or pass the instance id with --ssm-target", "%v", err)
		}
		how = "tagged " + tag
	}
	d.instance = id
	if strings.HasPrefix(id, "ecs:") {
		return id + " (an ECS task; SSM reports no agent status for tasks)", nil
	}
	out, err := ssm.NewFromConfig(d.aws).DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{
		Filters: []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: []string{id}}}})
	var ae smithy.APIError
	if errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "AccessDenied") {
		return fmt.Sprintf("%s (%s); its SSM agent status is unknown (no ssm:DescribeInstanceInformation permission)", id, how), nil
	}
	if err != nil {
		return "", fail("check your network access to AWS SSM", "ssm DescribeInstanceInformation for %s: %v", id, err)
	}
	const agentFix = "make sure the SSM agent runs on the instance (systemctl status amazon-ssm-agent), its instance profile has the AmazonSSMManagedInstanceCore policy, and it can reach the ssm, ssmmessages and ec2messages endpoints (VPC endpoints or NAT)"
	if len(out.InstanceInformationList) == 0 {
		return "", fail(agentFix, "%s (%s) is not registered with Systems Manager: no SSM agent has reported from it", id, how)
	}
	info := out.InstanceInformationList[0]
	if info.PingStatus != ssmtypes.PingStatusOnline {
		return "", fail(agentFix, "the SSM agent on %s (%s) is %s", id, how, info.PingStatus)
	}
	return fmt.Sprintf("%s (%s), SSM agent %s online", id, how, aws.ToString(info.AgentVersion)), nil
}

// checkTunnel opens the tunnel (unless finding the server did) and one
// stream through it.
func (d *doctor) checkTunnel(ctx context.Context) (string, error) {
	f := d.cmd.TunnelFlags
	fix := map[string]string{
		"ssm":    fmt.Sprintf("check that you may ssm:StartSession on %s with the document AWS-StartPortForwardingSession, and that the server listens on port %d there (--ssm-port)", d.instance, f.SSMPort),
		"kube":   fmt.Sprintf("check that the server listens on port %d in the pod (--kube-port) and that you may create pods/portforward", f.KubePort),
		"direct": "check --server, and --server-ca/--server-name when the server uses TLS",
	}[f.Via]
	if d.tun == nil {
		f.SSMTarget = d.instance // found already
		tun, cfg, err := f.open(ctx, d.log)
		if err != nil {
			return "", fail(fix, "%v", err)
		}
		d.tun, d.serverTLS = tun, cfg
	}
	stream, err := client.DialServer(ctx, d.tun, d.serverTLS)
	if err != nil {
		return "", fail(fix, "cannot open a stream to the server: %v", err)
	}
	defer stream.Close()
	if d.serverTLS != nil { // DialServer's SSLRequest and handshake went through
		return fmt.Sprintf("--via %s; the server answers, TLS verified", f.Via), nil
	}
	if err := probeServer(ctx, stream); err != nil {
		return "", fail(fix, "%v", err)
	}
	return fmt.Sprintf("--via %s; the server answers", f.Via), nil
}

// probeServer sends an SSLRequest and reads the one-byte answer, so a
// stream that reaches nothing (multiplexed transports open streams before
// the far end dials the port) fails here.
func probeServer(ctx context.Context, stream net.Conn) error {
	if deadline, ok := ctx.Deadline(); ok {
		stream.SetDeadline(deadline)
	}
	_, err := pgwire.AskTLS(stream)
	var step *pgwire.StepError
	switch {
	case errors.Is(err, pgwire.ErrNotPostgreSQL):
		return fmt.Errorf("what answers on the server's port is not an rdsproxy server (%w)", err)
	case errors.As(err, &step) && step.Step == pgwire.StepSendSSLRequest:
		return fmt.Errorf("send a probe to the server: %w", step.Err)
	case errors.As(err, &step):
		return fmt.Errorf("the server did not answer a probe: %w", step.Err)
	}
	return err
}

func (d *doctor) checkAnswers(ctx context.Context) (string, error) {
	if d.aws.Credentials != nil {
		d.ids = client.NewIdentitySigner(d.aws.Credentials, nil)
	}
	list, err := client.FetchTargetList(ctx, d.tun, d.serverTLS, d.ids)
	if err != nil {
		return "", fail(listFix(err), "%v", d.cmd.targetListError(err))
	}
	d.targets, d.server = list.Targets, list.Identity
	if list.Caller != nil {
		return fmt.Sprintf("%s; you are %s (as the server sees it)", plural(len(list.Targets), "target"), list.Caller.ARN), nil
	}
	return plural(len(list.Targets), "target"), nil
}

// listFix says what to do when the server did not give its target list:
// wait, when it answered that it cannot yet (a 503: no target list loaded,
// or AWS STS unreachable, both on its side), else check the port.
func listFix(err error) string {
	var lr *client.ListRefused
	switch {
	case !errors.As(err, &lr) || lr.Status != http.StatusServiceUnavailable:
		return "check that the port is rdsproxy server's (--ssm-port, --kube-port or --server) and read the server's log"
	case lr.Reason == contract.ReasonIdentitySTSUnreachable:
		return "the server cannot reach AWS STS to verify who you are: try again in a moment; if it lasts, the operator should check the server's route to STS (its log names the error)"
	}
	return "the server answers but cannot serve yet (starting, or it cannot list the databases: its log says why, and its /readyz answers 503 meanwhile): try again in a moment"
}

func (d *doctor) checkTarget(context.Context) (string, error) {
	if d.cmd.Target == "" {
		return "", &skipped{"no TARGET given"}
	}
	t, err := client.FindTarget(d.targets, d.cmd.Target)
	if err != nil {
		return "", fail("run `rdsproxy list` for the names; a database is served when its tags match the server's --allow-tag and --deny-tag rules and it has IAM authentication enabled",
			"%v", err)
	}
	d.target = t
	return fmt.Sprintf("%s → %s in %s", t.Name, t.Endpoint, t.Region), nil
}

func (d *doctor) checkToken(ctx context.Context) (string, error) {
	t := d.target
	if t.Auth != contract.AuthIAM {
		return "", &skipped{fmt.Sprintf("target %s uses %s authentication, not IAM", t.Name, t.Auth)}
	}
	d.user = loginUser(d.cmd.User, t)
	if d.user == "" {
		return "", fail("pass --user", "no database user: --user is not set, the target has no rdsproxy:users tag and $USER is empty")
	}
	tok, err := iamtoken.Build(ctx, t.Endpoint, t.Region, d.user, d.aws.Credentials)
	if err != nil {
		return "", fail(credentialsFix(d.cmd.Profile), "%v", err)
	}
	d.token = tok
	return fmt.Sprintf("for user %s at %s in %s", d.user, t.Endpoint, t.Region), nil
}

// loginUser is --user, else the target's first allowed user, else $USER.
func loginUser(flag string, t contract.Target) string {
	switch {
	case flag != "":
		return flag
	case len(t.Users) > 0:
		return t.Users[0]
	default:
		return os.Getenv("USER")
	}
}

// checkLogin logs in through the server with the token, the way
// `rdsproxy connect` does (a client.Proxy on a loopback port), and asks
// the database who we are.
func (d *doctor) checkLogin(ctx context.Context) (string, error) {
	t := d.target
	p, err := client.New(client.Config{Tunnel: d.tun, Target: t, Tokens: signedToken(d.token), ServerTLS: d.serverTLS,
		Identities: d.ids, Server: d.server, Logger: d.log})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the test login: %w", err)
	}
	defer serveLocal(ctx, p, ln).end()
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return "", fmt.Errorf("pgx configuration: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	cfg.Host, cfg.Port, cfg.User, cfg.Database = addr.IP.String(), uint16(addr.Port), d.user, databaseOf(t)
	cfg.RuntimeParams["application_name"] = "rdsproxy doctor"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", explainLogin(err, t, d.user)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return "", explainLogin(err, t, d.user)
	}
	return fmt.Sprintf("logged in to %s as %s (SELECT current_user)", t.Name, who), nil
}

// signedToken is the token checkToken signed, as a client.Tokens.
type signedToken string

func (s signedToken) Get(context.Context, string, string, string) (string, error) {
	return string(s), nil
}

// invalidCatalogName is PostgreSQL's SQLSTATE for a database that does not
// exist.
const invalidCatalogName = "3D000"

// explainLogin says in plain words why the test login failed.
func explainLogin(err error, t contract.Target, user string) *problem {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fail("check the server's log; the tunnel and the target list worked, so the session broke during the login",
			"the login did not complete: %v", err)
	}
	msg := strings.TrimPrefix(pe.Message, "rdsproxy: ")
	reason, ours := contract.ReasonOf(pe.Routine)
	switch {
	case pe.Code == pgwire.CodeInvalidPassword && !ours: // with IAM, the database's only refusal is its PAM check
		return fail(fmt.Sprintf("grant it rds_iam (GRANT rds_iam TO %s) and allow rds-db:connect for %s in your IAM policy", user, user),
			"the database refused the IAM token for %s (%s)", user, pe.Message)
	case reason == contract.ReasonUserNotAllowed:
		return fail(fmt.Sprintf("log in as one of %s (--user), or add %s to the database's rdsproxy:users tag", strings.Join(t.Users, ", "), user),
			"%s", msg)
	case pe.Code == pgwire.CodeInvalidPassword:
		return fail(hintOr(pe, "sign a fresh token with synced clock and the right credentials"), "the server refused the token: %s", msg)
	case pe.Code == invalidCatalogName && t.Database == "":
		return fail("tag the database with rdsproxy:db-name=NAME (a static target: database: NAME) naming a database it has; without one, clients log in to postgres",
			"%s", msg)
	case pe.Code == invalidCatalogName:
		return fail(fmt.Sprintf("the target's rdsproxy:db-name tag (a static target: database:) names %s, which the database does not have: change it to one it has", t.Database),
			"%s", msg)
	case pe.Code == pgwire.CodeCannotConnect:
		return fail(hintOr(pe, "check the database's status and that the server's security group may reach it"),
			"the server cannot reach the database: %s", msg)
	default:
		return fail(hintOr(pe, "read the server's log"), "the login failed with %s: %s", pe.Code, msg)
	}
}

func hintOr(pe *pgconn.PgError, fallback string) string {
	if pe.Hint != "" {
		return pe.Hint
	}
	return fallback
}

// plural is "1 check", "2 checks".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
