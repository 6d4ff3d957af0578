package terraform_test

// The AWS modules and examples planned for real: terraform init (providers
// from a local filesystem mirror only), validate and plan against moto, then
// the saved plan (`terraform show -json`) is checked for what matters on
// AWS: no public IP, IMDSv2 required, encrypted volumes, no ingress rule on
// the server's security group, the instance role's exact permissions, the
// developer policy, and the rendered user data. Every check is also run on
// a mutated copy of the plan so that it is shown to fail.

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// mirrorEnv names a filesystem mirror root to use instead of the usual places.
const mirrorEnv = "RDSPROXY_TF_PROVIDER_MIRROR"

// providerMirror finds a filesystem mirror root that holds hashicorp/<name>
// for this platform and returns it with the versions it holds, newest last.
// It looks at $RDSPROXY_TF_PROVIDER_MIRROR, /opt/tf-plugins and Terraform's
// implied local mirror directories.
func providerMirror(name string) (root string, versions []string) {
	home, _ := os.UserHomeDir()
	candidates := []string{os.Getenv(mirrorEnv), "/opt/tf-plugins",
		filepath.Join(home, ".terraform.d", "plugins"), filepath.Join(home, ".local", "share", "terraform", "plugins"),
		"/usr/local/share/terraform/plugins", "/usr/share/terraform/plugins"}
	platform := runtime.GOOS + "_" + runtime.GOARCH
	for _, c := range candidates {
		if c == "" {
			continue
		}
		bins, _ := filepath.Glob(filepath.Join(c, "registry.terraform.io", "hashicorp", name, "*", platform, "terraform-provider-"+name+"_*"))
		for _, b := range bins {
			versions = append(versions, filepath.Base(filepath.Dir(filepath.Dir(b))))
		}
		if len(versions) > 0 {
			sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
			return c, slices.Compact(versions)
		}
	}
	return "", nil
}

func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		var x, y int
		fmt.Sscan(pa[i], &x)
		fmt.Sscan(pb[i], &y)
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// planEnv: terraform installs providers from the mirror only (no network),
// and the AWS provider talks to moto with the sandbox credentials. Nothing
// AWS-related is taken from the caller's environment.
func planEnv(t *testing.T, mirror, motoURL string) []string {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "terraformrc")
	writeFile(t, rc, fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path    = %q\n    include = [\"registry.terraform.io/hashicorp/*\"]\n  }\n}\n", mirror))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "TF_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0", "TF_CLI_CONFIG_FILE="+rc,
		"AWS_ENDPOINT_URL="+motoURL, "AWS_ACCESS_KEY_ID="+sandbox.MotoAccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+sandbox.MotoSecretAccessKey, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull)
}

// copyTree copies modules/ and examples/ to a fresh directory, so that each
// plan has its own .terraform and override files never touch the sources.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	for _, top := range []string{"modules", "examples"} {
		err := filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			target := filepath.Join(dst, p)
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			if strings.HasSuffix(p, ".tfstate") || strings.HasSuffix(p, ".lock.hcl") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		})
		if err != nil {
			t.Fatalf("copy %s: %v", top, err)
		}
	}
	return dst
}

// pinOverride pins the provider version in a root module (an override file
// merges into its terraform block) and lets the provider skip the calls that
// moto cannot answer the way AWS does.
func pinOverride(version string) string {
	return fmt.Sprintf(`terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "= %s"
    }
  }
}
`, version)
}

// planCase is one root module to plan.
type planCase struct {
	name string
	// example is a directory under examples/; else root is generated.
	example string
	root    map[string]any
	vars    map[string]string
	want    planWant
}

// planWant is what the checks expect of one plan.
type planWant struct {
	name          string // the server name
	binaryObject  string // ARN the s3:GetObject grant must name; "" for URL delivery
	unknownPolicy int    // role policies that may be unknown at plan time (bucket created in the same apply)
	unknownUser   bool   // user data is unknown at plan time (for the same reason)
	region        string
	sha256        string
	endpoints     []string // VPC endpoint services expected
	developer     bool     // the root has output "developer" = the developer policy
	documents     []string // the documents the developer policy may allow
	devRegions    []string // regions the developer policy may name; empty: region
	port          string   // the server port the Session document pins
	noHealth      bool     // readiness_replacement is off: no SetInstanceHealth
	noHooks       bool     // lifecycle_hooks is off: no hooks, no CompleteLifecycleAction
	desired       int      // the group's desired_capacity
	drainSeconds  int      // the server's drain_timeout
	logs          *wantLogs
}

// wantLogs is the log group cloudwatch_logs should plan.
type wantLogs struct {
	group     string
	retention int
	kms       string
}

const planSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// moduleRoot is a root module calling modules/aws-server with a provider
// configured for the test (the module itself has no provider block).
func moduleRoot(args map[string]any) map[string]any {
	call := map[string]any{"source": "../../modules/aws-server"}
	maps.Copy(call, args)
	return map[string]any{
		"provider": map[string]any{"aws": map[string]any{"region": "eu-west-1"}},
		"module":   map[string]any{"rdsproxy": call},
		"output": map[string]any{
			"developer": map[string]any{"value": "${module.rdsproxy.developer_iam_policy_json}"},
			"config":    map[string]any{"value": "${module.rdsproxy.server_config}"},
		},
	}
}

// testNet is a VPC with subnets that moto holds, so that the module's
// subnet lookups (availability zones) read real answers.
type testNet struct {
	vpc         string
	a, b, alsoA string // subnets in eu-west-1a, eu-west-1b and again eu-west-1a
}

// createNet creates testNet in moto's eu-west-1.
func createNet(t *testing.T, moto *sandbox.Moto) testNet {
	t.Helper()
	api := ec2.NewFromConfig(moto.AWSConfig("eu-west-1"))
	vpc, err := api.CreateVpc(t.Context(), &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatalf("moto: create vpc: %v", err)
	}
	n := testNet{vpc: aws.ToString(vpc.Vpc.VpcId)}
	for i, s := range []struct {
		id *string
		az string
	}{{&n.a, "eu-west-1a"}, {&n.b, "eu-west-1b"}, {&n.alsoA, "eu-west-1a"}} {
		out, err := api.CreateSubnet(t.Context(), &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId,
			CidrBlock: aws.String(fmt.Sprintf("10.0.%d.0/24", i+1)), AvailabilityZone: aws.String(s.az)})
		if err != nil {
			t.Fatalf("moto: create subnet in %s: %v", s.az, err)
		}
		*s.id = aws.ToString(out.Subnet.SubnetId)
	}
	return n
}

func planCases(n testNet) []planCase {
	return []planCase{
		{
			name: "aws-server url delivery",
			root: moduleRoot(map[string]any{
				"name": "orders", "vpc_id": n.vpc, "subnet_ids": []string{n.a, n.b}, "drain_timeout": "90s",
				"rds_security_group_ids": []string{"sg-0123456789abcdef0"},
				"binary":                 map[string]any{"sha256": planSHA, "url": "https://example.com/rdsproxy_linux_arm64.tar.gz"},
			}),
			want: planWant{name: "orders", region: "eu-west-1", sha256: planSHA, developer: true, port: "5480", desired: 2, drainSeconds: 90,
				documents: []string{"arn:aws:ssm:eu-west-1:123456789012:document/orders-port-forward"}},
		},
		{
			name: "aws-server s3 delivery with endpoints",
			root: moduleRoot(map[string]any{
				"name": "reports", "vpc_id": n.vpc, "subnet_ids": []string{n.a, n.alsoA, n.b},
				"desired_capacity": 3, "max_size": 4, "lifecycle_hooks": map[string]any{"enabled": false},
				"create_vpc_endpoints": true, "ami_id": "ami-0123456789abcdef0", "architecture": "x86_64", "instance_type": "t3.micro",
				"binary":                     map[string]any{"sha256": planSHA, "s3_bucket": "rdsproxy-artifacts", "s3_key": "v1/rdsproxy"},
				"developer_rds_connect":      map[string]any{"resource_ids": []string{"db-ABCDEFGHIJKL"}, "db_users": []string{"app_reader"}},
				"developer_session_document": "aws", "developer_regions": []string{"eu-west-1", "us-east-1"}, "port": 6432,
				"readiness_replacement": map[string]any{"enabled": false},
				"cloudwatch_logs":       map[string]any{"enabled": true, "retention_in_days": 365, "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/0b6f1a3e-1111-2222-3333-444455556666"},
			}),
			want: planWant{name: "reports", region: "eu-west-1", sha256: planSHA, developer: true, port: "6432", noHealth: true, noHooks: true, desired: 3,
				devRegions:   []string{"eu-west-1", "us-east-1"},
				documents:    []string{"arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSession", "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession"},
				binaryObject: "arn:aws:s3:::rdsproxy-artifacts/v1/rdsproxy",
				logs:         &wantLogs{group: "/rdsproxy/reports", retention: 365, kms: "arn:aws:kms:eu-west-1:123456789012:key/0b6f1a3e-1111-2222-3333-444455556666"},
				endpoints:    []string{"com.amazonaws.eu-west-1.ec2messages", "com.amazonaws.eu-west-1.logs", "com.amazonaws.eu-west-1.rds", "com.amazonaws.eu-west-1.ssm", "com.amazonaws.eu-west-1.ssmmessages", "com.amazonaws.eu-west-1.sts"}},
		},
		{
			name: "examples/aws-complete", example: "aws-complete",
			vars: map[string]string{"region": "eu-central-1"},
			want: planWant{name: "rdsproxy-example", region: "eu-central-1", unknownPolicy: 1, unknownUser: true, port: "5480", desired: 2, drainSeconds: 30,
				logs:      &wantLogs{group: "/rdsproxy/rdsproxy-example", retention: 90},
				endpoints: []string{"com.amazonaws.eu-central-1.ec2messages", "com.amazonaws.eu-central-1.logs", "com.amazonaws.eu-central-1.rds", "com.amazonaws.eu-central-1.ssm", "com.amazonaws.eu-central-1.ssmmessages", "com.amazonaws.eu-central-1.sts"}},
		},
	}
}

// planSetup is what TestTerraformPlan needs of the machine: terraform, a
// filesystem mirror of hashicorp/aws (the versions in it are planned) and
// moto_server. missing says what is absent, "" when nothing is.
type planSetup struct {
	terraform, mirror string
	versions          []string
	missing           string
}

func findPlanSetup() planSetup {
	var s planSetup
	s.terraform, _ = exec.LookPath("terraform")
	s.mirror, s.versions = providerMirror("aws")
	_, motoErr := exec.LookPath("moto_server")
	switch {
	case s.terraform == "":
		s.missing = "terraform is not on PATH"
	case s.mirror == "":
		s.missing = fmt.Sprintf("no filesystem mirror of hashicorp/aws for %s_%s (looked in $%s, /opt/tf-plugins and Terraform's implied mirror directories)",
			runtime.GOOS, runtime.GOARCH, mirrorEnv)
	case motoErr != nil:
		s.missing = "moto_server (moto 5.x) is not on PATH"
	}
	return s
}

// plannedDocs are the files that say which hashicorp/aws versions were
// planned, as "hashicorp/aws 5.100.0" (or "Planned with 5.100.0"; several
// versions as "5.100.0 and 6.20.0").
var plannedDocs = []string{"../README.md", "README.md", "examples/aws-complete/README.md", awsServerDir + "/versions.tf"}

var plannedVersions = regexp.MustCompile(`(?:hashicorp/aws|Planned with) (\d+\.\d+\.\d+(?:(?:, | and )\d+\.\d+\.\d+)*)`)

// checkPlannedDocs: every statement of planned versions in text names
// exactly versions, and there is at least one.
func checkPlannedDocs(name, text string, versions []string) []string {
	text = strings.Join(strings.Fields(strings.ReplaceAll(text, "**", "")), " ")
	ms := plannedVersions.FindAllStringSubmatch(text, -1)
	if len(ms) == 0 {
		return []string{fmt.Sprintf("%s does not say which hashicorp/aws versions were planned (want %q)", name, versions)}
	}
	var problems []string
	for _, m := range ms {
		got := regexp.MustCompile(`\d+\.\d+\.\d+`).FindAllString(m[1], -1)
		slices.SortFunc(got, func(a, b string) int {
			if versionLess(a, b) {
				return -1
			}
			return 1
		})
		if !slices.Equal(got, versions) {
			problems = append(problems, fmt.Sprintf("%s says %q was planned; TestTerraformPlan plans %q (the versions in the mirror)", name, m[0], versions))
		}
	}
	return problems
}

// TestPlannedVersionsDocumented: the READMEs name exactly the hashicorp/aws
// versions TestTerraformPlan plans. `make test` runs it with -v before the
// suite, because go test shows a skip only with -v: its line says in the
// output whether the AWS modules are planned, and with what.
func TestPlannedVersionsDocumented(t *testing.T) {
	s := findPlanSetup()
	if s.missing != "" {
		t.Skipf("NOTICE: %s: TestTerraformPlan skipped; the AWS modules and examples were NOT planned", s.missing)
	}
	t.Logf("TestTerraformPlan plans the AWS modules and examples with hashicorp/aws %s from %s", strings.Join(s.versions, ", "), s.mirror)
	for _, name := range plannedDocs {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range checkPlannedDocs(name, string(b), s.versions) {
			t.Error(p)
		}
	}
	// The check reports a stale version, a missing one and silence.
	for _, bad := range []struct{ text, want string }{
		{"planned with hashicorp/aws 1.2.3 here", "says"},
		{"planned with hashicorp/aws 1.2.3 and " + strings.Join(s.versions, " and "), "says"},
		{"planned with the aws provider", "does not say"},
	} {
		if p := checkPlannedDocs("bad", bad.text, s.versions); len(p) == 0 || !strings.Contains(p[0], bad.want) {
			t.Errorf("checkPlannedDocs(%q) = %q, want a problem saying %q", bad.text, p, bad.want)
		}
	}
}

// TestTerraformPlan plans every AWS module and example with every
// hashicorp/aws version in the local mirror, against moto.
func TestTerraformPlan(t *testing.T) {
	s := findPlanSetup()
	if s.missing != "" {
		t.Skipf("NOTICE: %s; the AWS modules and examples were NOT planned", s.missing)
	}
	bin, mirror, versions := s.terraform, s.mirror, s.versions
	moto, err := sandbox.StartMoto(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moto.Close() })
	env := planEnv(t, mirror, moto.Endpoint())
	net := createNet(t, moto)
	artifact := filepath.Join(t.TempDir(), "rdsproxy-linux-arm64")
	content := "not a real binary; only its checksum is used by the plan"
	writeFile(t, artifact, content)
	artifactSHA := fmt.Sprintf("%x", sha256.Sum256([]byte(content)))

	for _, version := range versions {
		t.Run("aws "+version, func(t *testing.T) {
			t.Run("validate modules", func(t *testing.T) {
				t.Parallel()
				tree := copyTree(t)
				writeFile(t, filepath.Join(tree, awsServerDir, "pin_override.tf"), pinOverride(version))
				for _, dir := range []string{serverConfigDir, awsServerDir} {
					terraformSteps(t, bin, filepath.Join(tree, dir), env, []string{"init", "-backend=false"}, []string{"validate"})
				}
			})
			t.Run("one zone refused", func(t *testing.T) {
				t.Parallel()
				planRefused(t, bin, env, version, moduleRoot(map[string]any{
					"name": "orders", "vpc_id": net.vpc, "subnet_ids": []string{net.a, net.alsoA},
					"binary": map[string]any{"sha256": planSHA, "url": "https://example.com/rdsproxy_linux_arm64.tar.gz"},
				}), "every subnet in subnet_ids is in one availability zone")
			})
			for _, tc := range planCases(net) {
				if tc.example == "aws-complete" {
					tc.want.sha256 = artifactSHA
				}
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					start := time.Now()
					plan := planRoot(t, bin, env, version, tc, artifact)
					t.Logf("init+validate+plan+show: %s", time.Since(start).Round(100*time.Millisecond))
					for _, p := range checkPlan(plan, tc.want) {
						t.Error(p)
					}
					if tc.example == "" && tc.want.binaryObject == "" {
						checkMutationsCaught(t, plan, tc.want)
					}
					if tc.example != "" {
						checkReadmeAgrees(t, filepath.Join("examples", tc.example, "README.md"), tc.want.endpoints)
					}
				})
			}
		})
	}
}

// checkReadmeAgrees: the example's README describes the endpoints the plan
// creates (checkEndpoints holds the plan to endpoints); the check is shown to
// report a README that misses one or miscounts them.
func checkReadmeAgrees(t *testing.T, readme string, endpoints []string) {
	t.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkExampleReadme(string(b), endpoints) {
		t.Errorf("%s: %s", readme, p)
	}
	if len(checkExampleReadme("endpoints for `ssm` and `rds`; two interface endpoints", endpoints)) == 0 && len(endpoints) > 2 {
		t.Error("checkExampleReadme accepts a README that names two of the endpoints")
	}
}

// planRoot prepares the root module of tc in a copy of the tree, runs init,
// validate, plan and show, and returns the decoded plan.
func planRoot(t *testing.T, bin string, env []string, version string, tc planCase, artifact string) map[string]any {
	t.Helper()
	tree := copyTree(t)
	dir := filepath.Join(tree, "examples", tc.example)
	if tc.example == "" {
		dir = filepath.Join(tree, "roots", strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := json.MarshalIndent(tc.root, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "main.tf.json"), string(b))
		writeFile(t, filepath.Join(dir, "versions.tf"), "terraform {\n  required_providers {\n    aws = { source = \"hashicorp/aws\" }\n  }\n}\n")
	}
	writeFile(t, filepath.Join(dir, "pin_override.tf"), pinOverride(version))
	args := []string{"plan", "-lock=false", "-out=plan.bin"}
	if tc.example == "aws-complete" {
		args = append(args, "-var", "binary_path="+artifact)
	}
	for k, v := range tc.vars {
		args = append(args, "-var", k+"="+v)
	}
	terraformSteps(t, bin, dir, env, []string{"init", "-backend=false"}, []string{"validate"}, args)
	out := terraformSteps(t, bin, dir, env, []string{"show", "-json", "plan.bin"})
	var plan map[string]any
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("decode plan JSON: %v", err)
	}
	return plan
}

// planRefused plans root and wants the plan to fail with a message that
// contains want.
func planRefused(t *testing.T, bin string, env []string, version string, root map[string]any, want string) {
	t.Helper()
	tree := copyTree(t)
	dir := filepath.Join(tree, "roots", "refused")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "main.tf.json"), string(b))
	writeFile(t, filepath.Join(dir, "versions.tf"), "terraform {\n  required_providers {\n    aws = { source = \"hashicorp/aws\" }\n  }\n}\n")
	writeFile(t, filepath.Join(dir, "pin_override.tf"), pinOverride(version))
	terraformSteps(t, bin, dir, env, []string{"init", "-backend=false"})
	r := run(t, dir, env, bin, "plan", "-lock=false", "-no-color", "-input=false")
	// Terraform wraps long messages: compare with whitespace collapsed.
	out := strings.Join(strings.Fields(r.stdout+r.stderr), " ")
	if r.err == nil || !strings.Contains(out, want) {
		t.Fatalf("plan: err %v, want a failure saying %q:\n%s%s", r.err, want, r.stdout, r.stderr)
	}
}

// terraformSteps runs terraform commands in dir, failing on the first error,
// and returns the last command's stdout.
func terraformSteps(t *testing.T, bin, dir string, env []string, steps ...[]string) string {
	t.Helper()
	var last string
	for _, s := range steps {
		args := append(slices.Clone(s), "-no-color")
		if s[0] != "validate" && s[0] != "show" {
			args = append(args, "-input=false")
		}
		r := run(t, dir, env, bin, args...)
		if r.err != nil {
			t.Fatalf("terraform %s in %s: %v\n%s%s", strings.Join(s, " "), dir, r.err, r.stdout, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, "Warning:") && (s[0] == "validate" || s[0] == "plan") {
			t.Errorf("terraform %s in %s warns:\n%s%s", s[0], dir, r.stdout, r.stderr)
		}
		last = r.stdout
	}
	return last
}
