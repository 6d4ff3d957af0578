package sandbox

import (
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// STSAccount is the sandbox AWS account every STS principal belongs to.
const STSAccount = "111122223333"

// STSPrincipal is a caller the STS emulator knows: its identity as
// GetCallerIdentity reports it and the credentials that prove it.
type STSPrincipal struct {
	ARN             string
	UserID          string
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // temporary credentials only
}

// Credentials returns the principal's credentials for the AWS SDK.
func (p STSPrincipal) Credentials() aws.Credentials {
	return aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey,
		SessionToken: p.SessionToken, Source: "rdsproxy sandbox"}
}

// The sandbox principals: two roles (an automation role and a reporting
// role, both assumed), an SSO-style assumed role whose session name is a
// person, and the IAM user whose keys are the sandbox's default
// credentials (Credentials).
var (
	PrincipalAdmin = STSPrincipal{
		ARN:         "arn:aws:sts::" + STSAccount + ":assumed-role/rdsproxy-admin/deploy-bot",
		UserID:      "AROASANDBOXADMIN0000:deploy-bot",
		AccessKeyID: "ASIASANDBOXADMIN0001", SecretAccessKey: "sandbox/sts/admin/not-secret",
		SessionToken: "IQoJb3JpZ2luX2VjEadminSANDBOXsessionTOKEN",
	}
	PrincipalReader = STSPrincipal{
		ARN:         "arn:aws:sts::" + STSAccount + ":assumed-role/rdsproxy-reader/report-job",
		UserID:      "AROASANDBOXREADER000:report-job",
		AccessKeyID: "ASIASANDBOXREADER001", SecretAccessKey: "sandbox/sts/reader/not-secret",
		SessionToken: "IQoJb3JpZ2luX2VjEreaderSANDBOXsessionTOKEN",
	}
	// PrincipalSSO's session token is as long as IAM Identity Center's
	// tend to be, so the tests see real startup sizes.
	PrincipalSSO = STSPrincipal{
		ARN:         "arn:aws:sts::" + STSAccount + ":assumed-role/AWSReservedSSO_Developer_0123456789abcdef/alice@example.com",
		UserID:      "AROASANDBOXSSODEV0000:alice@example.com",
		AccessKeyID: "ASIASANDBOXSSOALICE1", SecretAccessKey: "sandbox/sts/sso-alice/not-secret",
		SessionToken: "IQoJb3JpZ2luX2VjEsso" + strings.Repeat("SANDBOXssoSESSIONtoken0123456789+/", 40),
	}
	PrincipalUser = STSPrincipal{
		ARN:         "arn:aws:iam::" + STSAccount + ":user/sandbox",
		UserID:      "AIDASANDBOXUSER00000",
		AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey,
	}
)

// STSPrincipals lists every sandbox principal.
func STSPrincipals() []STSPrincipal {
	return []STSPrincipal{PrincipalAdmin, PrincipalReader, PrincipalSSO, PrincipalUser}
}

// PrincipalSecrets maps each principal's access key id to its secret, as
// the RDS IAM emulator's Credentials expects.
func PrincipalSecrets() map[string]string {
	m := make(map[string]string)
	for _, p := range STSPrincipals() {
		m[p.AccessKeyID] = p.SecretAccessKey
	}
	return m
}
