package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ssocreds"
	"github.com/aws/smithy-go"
)

// credentialsWarning is how long before the credentials expire connect
// tries to renew them, and warns if it cannot.
const credentialsWarning = 10 * time.Minute

// credentials resolves the SDK's credentials once at start-up, so a
// command without usable credentials fails at once with the fix instead
// of saying ready and failing on the first connection.
func (f *SSMFlags) credentials(ctx context.Context) (aws.Credentials, error) {
	cfg, err := f.awsConfig(ctx)
	if err != nil {
		return aws.Credentials{}, f.credentialsProblem(err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, f.credentialsProblem(err)
	}
	return creds, nil
}

// credentialsProblem turns the SDK's error chain into what went wrong and
// what to do about it.
func (f *SSMFlags) credentialsProblem(err error) error {
	var notExist config.SharedConfigProfileNotExistError
	var sso *ssocreds.InvalidTokenError
	var what string
	switch {
	case errors.As(err, &notExist):
		what = fmt.Sprintf("the AWS profile %q is not in %s or %s", notExist.Profile,
			cmp.Or(os.Getenv("AWS_CONFIG_FILE"), "~/.aws/config"), cmp.Or(os.Getenv("AWS_SHARED_CREDENTIALS_FILE"), "~/.aws/credentials"))
	case errors.As(err, &sso), strings.Contains(err.Error(), "SSO token"): // the SSO token provider's errors are untyped
		what = "the AWS SSO session has expired or was never started"
	case expiredToken(err):
		what = "the AWS session credentials have expired"
	case strings.Contains(err.Error(), "EC2 IMDS"), strings.Contains(err.Error(), "ec2imds"):
		// The SDK's chain ends at the instance role: nothing else was found.
		what = "no AWS credentials found (environment, AWS_PROFILE, ~/.aws/credentials, SSO)"
	default:
		what = fmt.Sprintf("AWS credentials could not be loaded: %v", err)
	}
	return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%s: %s", what, credentialsFix(f.Profile))}
}

// expiredToken reports whether AWS refused a call because the session
// credentials have expired.
func expiredToken(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
		return true
	}
	return false
}

// credentialsFix says how to get credentials for profile ("" = none set).
func credentialsFix(profile string) string {
	if profile == "" {
		return "set --profile or AWS_PROFILE to a profile with credentials (run `aws sso login --profile NAME` for an SSO profile), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
	}
	return fmt.Sprintf("check the profile %q in ~/.aws/config and ~/.aws/credentials; for an SSO profile run `aws sso login --profile %s`", profile, profile)
}

// credentialsWatch warns during a long connect when the credentials are
// about to expire and cannot be renewed. The SDK renews expired
// credentials by itself when it can (SSO role credentials from a live SSO
// session, assume-role), so only a failed renewal is worth a word.
type credentialsWatch struct {
	current aws.CredentialsProvider                        // the command's, renewed by the SDK
	renew   func(context.Context) (aws.Credentials, error) // a fresh chain: can new credentials be had?
	wait    func(context.Context, time.Time) error         // until a time, or ctx's end
	fix     string
	log     *slog.Logger
}

func (f *SSMFlags) watchCredentials(ctx context.Context, log *slog.Logger) error {
	cfg, err := f.awsConfig(ctx)
	if err != nil {
		return err
	}
	w := &credentialsWatch{current: cfg.Credentials, wait: waitUntil, fix: credentialsFix(f.Profile), log: log,
		renew: func(ctx context.Context) (aws.Credentials, error) {
			fresh := &SSMFlags{Profile: f.Profile, Region: f.Region}
			return fresh.credentials(ctx)
		}}
	w.run(ctx)
	return nil
}

// run checks before each expiry until ctx ends or the credentials are
// ones that do not expire.
func (w *credentialsWatch) run(ctx context.Context) {
	failing := false // log once per failure streak
	for {
		creds, err := w.current.Retrieve(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing {
				w.log.Error("AWS credentials expired and cannot be renewed: new connections fail until they are", "fix", w.fix)
			}
			failing = true
			if w.wait(ctx, time.Now().Add(time.Minute)) != nil {
				return
			}
			continue
		}
		if failing {
			w.log.Info("AWS credentials renewed")
			failing = false
		}
		if !creds.CanExpire {
			return
		}
		if w.wait(ctx, creds.Expires.Add(-credentialsWarning)) != nil {
			return
		}
		if _, err := w.renew(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("AWS credentials expire soon and cannot be renewed: new connections will fail after then",
				"expires", creds.Expires.Format(time.TimeOnly), "fix", w.fix)
		}
		if w.wait(ctx, creds.Expires) != nil {
			return
		}
	}
}

// waitUntil waits until t or ctx's end, whichever comes first.
func waitUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
