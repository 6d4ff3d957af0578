package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

// noCredentials empties the environment of AWS credentials: no keys, no
// profile, empty shared files, no instance role. It returns the config
// file's path.
func noCredentials(t *testing.T) string {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("RDSPROXY_STATE_DIR", home)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "RDSPROXY_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	config := filepath.Join(home, "config")
	t.Setenv("AWS_CONFIG_FILE", config)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "credentials"))
	ssoProfile := "[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Dev\nregion = us-east-1\n" +
		"[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n"
	if err := os.WriteFile(config, []byte(ssoProfile), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}

// Without usable credentials, every command that needs them fails at
// start-up with what is wrong and the fix, not the SDK's error chain, and
// connect never says it is ready.
func TestCommandsWithoutCredentials(t *testing.T) {
	config := noCredentials(t)
	addr := startListServer(t, "orders")
	direct := []string{"--via", "direct", "--server", addr}
	commands := map[string][]string{
		"token":      append([]string{"token", "orders"}, direct...),
		"connect":    append([]string{"connect", "orders"}, direct...),
		"psql":       append([]string{"psql", "orders"}, direct...),
		"list (ssm)": {"list", "--via", "ssm"},
	}
	profiles := []struct{ name, flag, want string }{
		{"none", "", "no AWS credentials found"},
		{"unknown profile", "--profile=nope", // the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name
			fmt.Sprintf(`the AWS profile "nope" is not in %s or %s`, config, filepath.Join(filepath.Dir(config), "credentials"))},
		{"sso not logged in", "--profile=sso", "the AWS SSO session has expired or was never started"},
	}
	for name, args := range commands {
		for _, p := range profiles {
			t.Run(name+"/"+p.name, func(t *testing.T) {
				args := args[:len(args):len(args)]
				if p.flag != "" {
					args = append(args, p.flag)
				}
				var out, errOut bytes.Buffer
				code := Run(args, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut})
				msg := errOut.String()
				if code != ExitFailure || !strings.Contains(msg, p.want) || !strings.Contains(msg, "aws sso login") {
					t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 with %q and the fix", code, msg, p.want)
				}
				for _, raw := range []string{"failed to refresh cached credentials", "operation error", "SharedConfigProfileNotExist"} {
					if strings.Contains(msg, raw) {
						t.Errorf("stderr shows the SDK's error chain (%q):\n%s", raw, msg)
					}
				}
				if strings.Contains(out.String(), "psql") || strings.Contains(msg, "ready") {
					t.Errorf("%s said it was ready without credentials:\n%s%s", name, out.String(), msg)
				}
			})
		}
	}
}

type fakeCredentials struct {
	results []error // one per Retrieve; nil = expiring credentials, then never-expiring ones
	expires time.Time
	calls   int
}

func (f *fakeCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	f.calls++
	if f.calls > len(f.results) {
		return aws.Credentials{AccessKeyID: "AKIASTATIC"}, nil
	}
	if err := f.results[f.calls-1]; err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{AccessKeyID: "AKIATEMP", CanExpire: true, Expires: f.expires}, nil
}

// connect's credentials watch warns before expiry only when the
// credentials cannot be renewed, and logs a failure streak once.
func TestCredentialsWatch(t *testing.T) {
	expires := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	refused := errors.New("refresh cached SSO token failed")
	tests := []struct {
		name     string
		current  []error
		renewErr error
		want     []string // log messages, in order
		waits    []time.Time
	}{
		{"renewable", []error{nil}, nil, nil, []time.Time{expires.Add(-credentialsWarning), expires}},
		{"not renewable", []error{nil}, refused, []string{"AWS credentials expire soon and cannot be renewed"},
			[]time.Time{expires.Add(-credentialsWarning), expires}},
		{"expired, then renewed", []error{refused, refused, nil}, nil,
			[]string{"AWS credentials expired and cannot be renewed", "AWS credentials renewed"},
			[]time.Time{{}, {}, expires.Add(-credentialsWarning), expires}},
		{"never expire", nil, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			var waits []time.Time
			w := &credentialsWatch{
				current: &fakeCredentials{results: tt.current, expires: expires},
				renew:   func(context.Context) (aws.Credentials, error) { return aws.Credentials{}, tt.renewErr },
				wait: func(_ context.Context, until time.Time) error {
					if until.Before(expires.Add(-time.Hour)) {
						until = time.Time{} // "a minute from now": not comparable
					}
					waits = append(waits, until)
					return nil
				},
				fix: "run `aws sso login`",
				log: slog.New(slog.NewTextHandler(&logs, nil)),
			}
			w.run(t.Context())
			if !equalTimes(waits, tt.waits) {
				t.Errorf("waited until %v, want %v", waits, tt.waits)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if logs.Len() == 0 {
				lines = nil
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("logs:\n%s\nwant %q", logs.String(), tt.want)
			}
			for i, want := range tt.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("log line %d: %s\nwant %q", i, lines[i], want)
				}
			}
			if tt.renewErr != nil && !strings.Contains(logs.String(), "aws sso login") {
				t.Errorf("the warning does not say how to fix it:\n%s", logs.String())
			}
		})
	}
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// AWS refusing a call for expired session credentials (list --via ssm,
// connect --via ssm) is said as such, with the fix; other errors pass.
func TestAWSCallProblem(t *testing.T) {
	f := &SSMFlags{Profile: "dev"}
	expired := fmt.Errorf("find the server: operation error EC2: DescribeInstances: %w",
		&smithy.GenericAPIError{Code: "ExpiredToken", Message: "The security token included in the request is expired"})
	err := f.awsCallProblem(expired)
	if err == nil || !strings.Contains(err.Error(), "the AWS session credentials have expired") ||
		!strings.Contains(err.Error(), "aws sso login --profile dev") || strings.Contains(err.Error(), "operation error") {
		t.Errorf("expired: %v", err)
	}
	other := errors.New("no running instance is tagged rdsproxy:server=x")
	if err := f.awsCallProblem(other); err != other {
		t.Errorf("other error changed: %v", err)
	}
	if err := f.awsCallProblem(nil); err != nil {
		t.Errorf("nil: %v", err)
	}
}
