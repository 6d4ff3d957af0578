package cli

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
	"github.com/rdsproxy/rdsproxy/tunnel"
	"github.com/rdsproxy/rdsproxy/tunnel/kube"
	ssmtun "github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// TunnelFlags say how the client reaches the server.
type TunnelFlags struct {
	Use        string `help:"Use this server's settings from the configuration file's servers: section (default: its default-server)." env:"RDSPROXY_USE" placeholder:"NAME"`
	Via        string `help:"How to reach the server: ssm, kube or direct." default:"ssm" enum:"ssm,kube,direct" env:"RDSPROXY_VIA"`
	Server     string `help:"Server address HOST:PORT (--via direct)." env:"RDSPROXY_SERVER" placeholder:"HOST:PORT"`
	ServerCA   string `help:"PEM CA that signed the server's certificate; makes the server hop use TLS (verify-full)." type:"existingfile" env:"RDSPROXY_SERVER_CA"`
	ServerName string `help:"Host name to verify in the server's certificate (default: the host of --server)." env:"RDSPROXY_SERVER_NAME"`
	SSMFlags
	KubeFlags
}

// serverKey names the server these flags reach, for what the client
// remembers per server.
func (f *TunnelFlags) serverKey() string {
	switch f.Via {
	case "direct":
		return "direct " + f.Server
	case "kube":
		return fmt.Sprintf("kube %s/%s/%s:%d", f.KubeContext, f.KubeNamespace, cmp.Or(f.KubeSelector, f.KubeDeployment), f.KubePort)
	}
	return fmt.Sprintf("ssm %s/%s/%s/%s:%d", f.Profile, f.Region, cmp.Or(f.SSMTarget, f.SSMServer), f.SSMHost, f.SSMPort)
}

// SSMFlags locate the server's instance for --via ssm.
type SSMFlags struct {
	SSMTarget   string `name:"ssm-target" help:"Managed node running the server: i-…, mi-… or ecs:CLUSTER_TASK_CONTAINER (default: found by --ssm-server)." env:"RDSPROXY_SSM_TARGET"`
	SSMServer   string `name:"ssm-server" help:"Find the server as a running EC2 instance tagged rdsproxy:server=NAME." default:"rdsproxy" env:"RDSPROXY_SSM_SERVER"`
	SSMHost     string `name:"ssm-host" help:"Reach the server at this host through the managed node (AWS-StartPortForwardingSessionToRemoteHost)." env:"RDSPROXY_SSM_HOST"`
	SSMPort     int    `name:"ssm-port" help:"The server's port on the node (or on --ssm-host)." default:"5480" env:"RDSPROXY_SSM_PORT"`
	SSMDocument string `name:"ssm-document" help:"Start sessions with this Session document, which pins the server's port (the Terraform module's ssm_document_name output), instead of AWS-StartPortForwardingSession." env:"RDSPROXY_SSM_DOCUMENT"`
	SSMSessions int    `name:"ssm-sessions" help:"Session Manager sessions per server instance to spread connections over, 1 to 64 (the SSM agent caps each below ~1 MB/s)." default:"1" env:"RDSPROXY_SSM_SESSIONS"`
	SSMStriping bool   `name:"ssm-striping" help:"Spread each connection over all --ssm-sessions sessions and compress it (zstd), when the server supports it; with 2 or more, one more session is a lane that small messages take, so queries stay quick beside a transfer; --no-ssm-striping keeps one raw stream per connection." default:"true" negatable:"" env:"RDSPROXY_SSM_STRIPING"`
	SSMCompress bool   `name:"ssm-compress" help:"Compress striped connections (zstd; blocks that do not shrink go as they are); --no-ssm-compress stripes without it." default:"true" negatable:"" env:"RDSPROXY_SSM_COMPRESS"`
	Profile     string `help:"AWS profile (default: the SDK's chain)." env:"AWS_PROFILE"`
	Region      string `help:"AWS region of the server's instance (default: the SDK's)." env:"AWS_REGION"`

	loaded *aws.Config // awsConfig's result (unexported: not a flag)
}

// awsConfig loads the SDK configuration with the profile and region flags,
// once per command: the token signer, the SSM tunnel and doctor share it,
// so credentials (an assume-role call, an MFA prompt, an SSO refresh) are
// resolved once, not once per user.
func (f *SSMFlags) awsConfig(ctx context.Context) (aws.Config, error) {
	if f.loaded != nil {
		return *f.loaded, nil
	}
	var opts []func(*config.LoadOptions) error
	if f.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(f.Profile))
	}
	if f.Region != "" {
		opts = append(opts, config.WithRegion(f.Region))
	}
	// The SDK's own log lines (e.g. "falling back to IMDSv1" while it
	// looks for credentials) would interleave with ours; its failures
	// reach us as errors, which say what to do.
	opts = append(opts, config.WithLogger(logging.Nop{}))
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	f.loaded = &cfg
	return cfg, nil
}

// tokenSource signs IAM tokens with the SDK's credentials (re-read by the
// SDK when they expire) and caches them per endpoint, region and user.
func (f *SSMFlags) tokenSource(ctx context.Context) (*iamtoken.Cache, error) {
	if _, err := f.credentials(ctx); err != nil {
		return nil, err
	}
	cfg, err := f.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	creds := cfg.Credentials
	return iamtoken.NewCache(func(ctx context.Context, endpoint, region, user string) (string, error) {
		return iamtoken.Build(ctx, endpoint, region, user, creds)
	}, time.Now), nil
}

// openSSM reaches the server through Session Manager: to --ssm-target
// alone, or else over every healthy instance tagged --ssm-server, followed
// through replacements (a tunnel.Pool with one SSM tunnel, of --ssm-sessions
// sessions, per instance). Credentials are checked first, and an AWS
// refusal for expired ones is said as such, with the fix.
func (f *SSMFlags) openSSM(ctx context.Context, log *slog.Logger) (tunnel.Tunnel, error) {
	cfg, err := f.awsConfig(ctx)
	if err != nil {
		return nil, f.credentialsProblem(err)
	}
	if cfg.Region == "" { // before the credentials, which an SSO or assume-role profile fetches from AWS
		return nil, &ExitError{Code: ExitFailure, Err: errors.New(
			"no AWS region is configured for the server's instance: pass --region, set AWS_REGION, or set region in your AWS profile")}
	}
	if _, err := f.credentials(ctx); err != nil {
		return nil, err
	}
	api := ssm.NewFromConfig(cfg)
	open := func(ctx context.Context, target string, ended func(error)) (tunnel.Tunnel, error) {
		return ssmtun.New(ctx, ssmtun.Config{API: api, Target: target, Host: f.SSMHost, Port: f.SSMPort,
			Document: f.SSMDocument, Sessions: f.SSMSessions, Lane: f.SSMStriping && f.SSMSessions > 1, Logger: log.With("instance", target), SessionEnded: ended})
	}
	if f.SSMTarget != "" {
		tun, err := open(ctx, f.SSMTarget, nil)
		return tun, f.awsCallProblem(err)
	}
	instances := &ssmtun.Instances{EC2: ec2.NewFromConfig(cfg), SSM: api, Server: f.SSMServer, Logger: log}
	var pool atomic.Pointer[tunnel.Pool]
	refresh := func(error) {
		if p := pool.Load(); p != nil {
			p.Refresh() // a session ended: the instance may be gone
		}
	}
	p, err := tunnel.NewPool(ctx, tunnel.PoolConfig{
		Resolve: instances.Healthy,
		Open:    func(ctx context.Context, id string) (tunnel.Tunnel, error) { return open(ctx, id, refresh) },
		Key:     "instance", Logger: log,
	})
	if err != nil {
		return nil, f.findProblem(f.awsCallProblem(err))
	}
	pool.Store(p)
	return p, nil
}

// findProblem adds the other way to name the server's instance when
// finding it by tag failed.
func (f *SSMFlags) findProblem(err error) error {
	if errors.Is(err, ssmtun.ErrNoInstance) || errors.Is(err, ssmtun.ErrFindDenied) || errors.Is(err, ssmtun.ErrNotConnected) {
		return fmt.Errorf("%w (or pass the instance id with --ssm-target)", err)
	}
	return err
}

// awsCallProblem is err, or the credentials problem when AWS refused the
// call for the credentials: expired, unknown, or signed with a wrong
// secret key.
func (f *SSMFlags) awsCallProblem(err error) error {
	var ae smithy.APIError
	switch {
	case err == nil:
		return nil
	case expiredToken(err):
		return f.credentialsProblem(err)
	case errors.As(err, &ae) && refusedCredentials(ae.ErrorCode()):
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("AWS refused the credentials (%s: %s): %s",
			ae.ErrorCode(), ae.ErrorMessage(), credentialsFix(f.Profile))}
	}
	return err
}

// refusedCredentials reports the error codes of AWS APIs (EC2's own among
// them) for an access key AWS does not know or a wrong secret key.
func refusedCredentials(code string) bool {
	switch code {
	case "InvalidClientTokenId", "UnrecognizedClientException", "InvalidSignatureException",
		"SignatureDoesNotMatch", "AuthFailure":
		return true
	}
	return false
}

// KubeFlags locate the server's pods for --via kube.
type KubeFlags struct {
	Kubeconfig     string `help:"Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)." env:"KUBECONFIG" placeholder:"FILE"`
	KubeContext    string `help:"Kubeconfig context (default: the current context)." env:"RDSPROXY_KUBE_CONTEXT"`
	KubeNamespace  string `help:"Namespace of the server (default: the context's, else default)." env:"RDSPROXY_KUBE_NAMESPACE"`
	KubeDeployment string `help:"Deployment of the server." default:"rdsproxy" env:"RDSPROXY_KUBE_DEPLOYMENT"`
	KubeSelector   string `help:"Label selector of the server's pods, instead of --kube-deployment." env:"RDSPROXY_KUBE_SELECTOR"`
	KubePort       int    `help:"The server's port inside the pod." default:"5480" env:"RDSPROXY_KUBE_PORT"`
}

// open builds the tunnel and the TLS settings for the server hop.
func (f *TunnelFlags) open(ctx context.Context, log *slog.Logger) (tunnel.Tunnel, *tls.Config, error) {
	cfg, err := f.serverTLS()
	if err != nil {
		return nil, nil, err
	}
	log.Info("connecting to the rdsproxy server", "via", f.Via)
	var tun tunnel.Tunnel
	switch f.Via {
	case "ssm":
		tun, err = f.openSSM(ctx, log)
	case "kube":
		deployment := f.KubeDeployment
		if f.KubeSelector != "" {
			deployment = ""
		}
		tun, err = kube.New(ctx, kube.Config{
			Kubeconfig: f.Kubeconfig, Context: f.KubeContext, Namespace: f.KubeNamespace,
			Deployment: deployment, Selector: f.KubeSelector, Port: f.KubePort, Logger: log,
		})
	default:
		if f.Server == "" {
			return nil, nil, errors.New("--via direct needs --server HOST:PORT")
		}
		tun, err = tunnel.NewDirect(f.Server, 15*time.Second)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open the --via %s tunnel: %w", f.Via, err)
	}
	return tun, cfg, nil
}

func (f *TunnelFlags) serverTLS() (*tls.Config, error) {
	if f.ServerCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("--server-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--server-ca %s holds no PEM certificate", f.ServerCA)
	}
	name := f.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(f.Server)
	}
	return &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}, nil
}
