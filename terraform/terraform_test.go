// Package terraform_test checks the Terraform modules without an AWS account,
// a Kubernetes cluster or provider downloads:
//
//   - terraform fmt, and a static analysis of every .tf file with hcl/v2
//     (typed and described variables, the instance role's exact actions, no
//     wildcard actions, IMDSv2, no public IP, encrypted volumes, no provider
//     blocks in modules, module calls and references that resolve);
//   - the server configuration each module renders: the wiring expressions
//     of modules/aws-server and modules/kubernetes are evaluated, the
//     provider-free modules/server-config is applied with them by the real
//     terraform binary, and the resulting YAML, systemd ExecStart line,
//     user-data script and container arguments are run through the real
//     rdsproxy binary's `server --dry-run`.
package terraform_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"go.yaml.in/yaml/v3"
)

const (
	serverConfigDir = "modules/server-config"
	awsServerDir    = "modules/aws-server"
	kubernetesDir   = "modules/kubernetes"
)

// contractKeys are the config-file keys of `rdsproxy server` (its long flag
// names) and of one static target.
var (
	contractKeys = []string{
		"listen", "admin-addr", "region", "allow-tag", "deny-tag", "refresh-interval", "map",
		"ca-file", "tls-cert", "tls-key", "max-sessions", "startup-timeout", "dial-timeout",
		"max-startup-size", "drain-timeout", "log-format", "log-level", "server-id", "targets", "require-identity", "revoke-sessions",
	}
	contractTargetKeys = []string{"name", "endpoint", "region", "auth", "tls", "database", "users", "read-only", "local-port", "principals"}
)

func TestTerraformFmt(t *testing.T) {
	bin := terraformBin(t)
	r := run(t, ".", terraformEnv(t), bin, "fmt", "-check", "-recursive", "-diff", "-no-color", ".")
	if r.err != nil {
		t.Fatalf("terraform fmt -check -recursive: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
}

// ---------------------------------------------------------------------------
// Static checks, each a function returning problems so that the negative
// controls below prove it can fail.
// ---------------------------------------------------------------------------

func checkVariables(m *module) []string {
	var problems []string
	for name, b := range m.named("variable") {
		if _, ok := b.Body.Attributes["type"]; !ok {
			problems = append(problems, fmt.Sprintf("variable %s has no type", name))
		}
		a, ok := b.Body.Attributes["description"]
		if !ok {
			problems = append(problems, fmt.Sprintf("variable %s has no description", name))
			continue
		}
		if v, err := literal(a.Expr); err != nil || v.Type() != cty.String || len(strings.TrimSpace(v.AsString())) < 10 {
			problems = append(problems, fmt.Sprintf("variable %s: description must be a literal sentence", name))
		}
	}
	return problems
}

// statements returns the statement blocks of an aws_iam_policy_document,
// including the content of dynamic "statement" blocks.
func statements(doc *hclsyntax.Block) []*hclsyntax.Block {
	out := children(doc, "statement")
	for _, d := range children(doc, "dynamic") {
		if len(d.Labels) == 1 && d.Labels[0] == "statement" {
			out = append(out, children(d, "content")...)
		}
	}
	return out
}

// statementActions returns a statement's literal actions.
func statementActions(st *hclsyntax.Block) ([]string, error) {
	if _, ok := st.Body.Attributes["not_actions"]; ok {
		return nil, fmt.Errorf("uses not_actions")
	}
	a, ok := st.Body.Attributes["actions"]
	if !ok {
		return nil, fmt.Errorf("has no actions")
	}
	v, err := literal(a.Expr)
	if err != nil {
		return nil, fmt.Errorf("actions are not a literal list: %w", err)
	}
	return stringList(v)
}

// checkNoWildcardActions looks at every policy this repository writes:
// aws_iam_policy_document statements and jsonencode'd "Action" keys.
func checkNoWildcardActions(m *module) []string {
	var problems []string
	for _, doc := range m.blocks("data", "aws_iam_policy_document") {
		for _, st := range statements(doc) {
			actions, err := statementActions(st)
			if err != nil {
				problems = append(problems, fmt.Sprintf("policy document %s: statement %v", doc.Labels[1], err))
			}
			for _, a := range actions {
				if strings.Contains(a, "*") || !strings.Contains(a, ":") {
					problems = append(problems, fmt.Sprintf("policy document %s: wildcard or malformed action %q", doc.Labels[1], a))
				}
			}
		}
	}
	for name, body := range m.files {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			call, ok := n.(*hclsyntax.FunctionCallExpr)
			if !ok || call.Name != "jsonencode" || len(call.Args) != 1 || !strings.Contains(m.text(call), "Action") {
				return nil
			}
			v, diags := call.Args[0].Value(&hcl.EvalContext{Functions: functions()})
			if diags.HasErrors() {
				problems = append(problems, fmt.Sprintf("%s: jsonencode'd policy at %s is not static, cannot check it", name, call.Range()))
				return nil
			}
			problems = append(problems, jsonPolicyProblems(v)...)
			return nil
		})
	}
	return problems
}

func jsonPolicyProblems(v cty.Value) []string {
	var problems []string
	if v.IsNull() || !v.CanIterateElements() {
		return nil
	}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if k.Type() == cty.String && (k.AsString() == "NotAction") {
			problems = append(problems, "jsonencode'd policy uses NotAction")
		}
		if k.Type() == cty.String && k.AsString() == "Action" {
			actions := []string{}
			if e.Type() == cty.String {
				actions = append(actions, e.AsString())
			} else if l, err := stringList(e); err == nil {
				actions = l
			} else {
				problems = append(problems, "jsonencode'd policy: Action is not a string or list")
			}
			for _, a := range actions {
				if strings.Contains(a, "*") {
					problems = append(problems, fmt.Sprintf("jsonencode'd policy: wildcard action %q", a))
				}
			}
			continue
		}
		problems = append(problems, jsonPolicyProblems(e)...)
	}
	return problems
}

// checkReferences stands in for `terraform validate` where the provider is
// not in the local mirror (the Kubernetes module and example; the AWS ones
// are validated and planned by TestTerraformPlan): every var., local.,
// module., data. and resource reference in the module resolves, and module
// calls pass only declared variables and every required one.
func checkReferences(t *testing.T, m *module) []string {
	var problems []string
	declared := map[string]bool{}
	for name := range m.named("variable") {
		declared["var."+name] = true
	}
	for _, b := range m.blocks("locals") {
		for name := range b.Body.Attributes {
			declared["local."+name] = true
		}
	}
	for _, b := range m.blocks("resource") {
		declared[b.Labels[0]+"."+b.Labels[1]] = true
	}
	for _, b := range m.blocks("data") {
		declared["data."+b.Labels[0]+"."+b.Labels[1]] = true
	}
	iterators := map[string]bool{"each": true, "count": true, "path": true, "self": true, "terraform": true}
	for _, body := range m.files {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			if b, ok := n.(*hclsyntax.Block); ok && b.Type == "dynamic" {
				iterators[b.Labels[0]] = true
			}
			return nil
		})
	}
	for _, call := range m.blocks("module") {
		calledDir := filepath.Join(m.dir, literalString(call.Body.Attributes["source"]))
		if !strings.HasPrefix(literalString(call.Body.Attributes["source"]), ".") {
			continue
		}
		called := loadModule(t, calledDir)
		for name := range called.named("output") {
			declared["module."+call.Labels[0]+"."+name] = true
		}
		vars := called.named("variable")
		for arg := range call.Body.Attributes {
			if _, ok := vars[arg]; !ok && arg != "source" && arg != "providers" && arg != "depends_on" && arg != "count" && arg != "for_each" {
				problems = append(problems, fmt.Sprintf("module %s passes undeclared variable %s", call.Labels[0], arg))
			}
		}
		for name, v := range vars {
			if _, hasDefault := v.Body.Attributes["default"]; !hasDefault && call.Body.Attributes[name] == nil {
				problems = append(problems, fmt.Sprintf("module %s does not pass required variable %s", call.Labels[0], name))
			}
		}
	}
	// Attribute expressions' Variables() leave out for-expression symbols.
	for _, body := range m.files {
		walkAttributes(body, func(a *hclsyntax.Attribute) {
			for _, tr := range a.Expr.Variables() {
				if p := resolve(tr, declared, iterators); p != "" {
					problems = append(problems, fmt.Sprintf("%s: %s", tr.SourceRange(), p))
				}
			}
		})
	}
	return problems
}

// walkAttributes calls fn for every attribute at any depth, except variable
// types, which are type expressions rather than references.
func walkAttributes(body *hclsyntax.Body, fn func(*hclsyntax.Attribute)) {
	for _, a := range body.Attributes {
		fn(a)
	}
	for _, b := range body.Blocks {
		if b.Type == "variable" {
			for name, a := range b.Body.Attributes {
				if name != "type" {
					fn(a)
				}
			}
			walkAttributes(&hclsyntax.Body{Blocks: b.Body.Blocks}, fn)
			continue
		}
		walkAttributes(b.Body, fn)
	}
}

func resolve(tr hcl.Traversal, declared, iterators map[string]bool) string {
	root := tr.RootName()
	if iterators[root] {
		return ""
	}
	parts := []string{root}
	for _, step := range tr[1:] {
		a, ok := step.(hcl.TraverseAttr)
		if !ok {
			break
		}
		parts = append(parts, a.Name)
	}
	want := 2
	switch root {
	case "data", "module":
		want = 3
	}
	if root == "module" && len(parts) == 2 {
		want = 2 // whole-module reference
		for k := range declared {
			if strings.HasPrefix(k, "module."+parts[1]+".") {
				return ""
			}
		}
	}
	if len(parts) < want {
		return fmt.Sprintf("cannot resolve reference %s", strings.Join(parts, "."))
	}
	if name := strings.Join(parts[:want], "."); !declared[name] {
		return fmt.Sprintf("undeclared reference %s", name)
	}
	return ""
}

func literalString(a *hclsyntax.Attribute) string {
	if a == nil {
		return ""
	}
	v, err := literal(a.Expr)
	if err != nil || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

func TestModulesStatic(t *testing.T) {
	for _, dir := range moduleDirs(t, ".") {
		t.Run(dir, func(t *testing.T) {
			m := loadModule(t, dir)
			// What a plan cannot see: descriptions, version constraints, the
			// provider-major compatibility, and for the modules whose
			// provider is not mirrored here, the references.
			problems := slices.Concat(checkVariables(m), checkNoWildcardActions(m), checkProviderCompat(m))
			if strings.Contains(dir, "kubernetes") {
				problems = append(problems, checkReferences(t, m)...)
			}
			isModule := strings.HasPrefix(dir, "modules"+string(filepath.Separator))
			if isModule && len(m.blocks("provider")) > 0 {
				problems = append(problems, "a module must not declare provider blocks")
			}
			problems = append(problems, checkVersions(m)...)
			if dir == awsServerDir {
				if n := len(m.blocks("resource", "aws_launch_template")); n != 1 {
					problems = append(problems, fmt.Sprintf("want one launch template, found %d", n))
				}
			}
			for _, p := range problems {
				t.Error(p)
			}
		})
	}
}

// checkVersions: a versions.tf with a minimum Terraform version and, for
// every provider whose resources the module uses, a source and a minimum version.
func checkVersions(m *module) []string {
	var problems []string
	tf := m.blocks("terraform")
	if len(tf) != 1 || filepath.Base(tf[0].Range().Filename) != "versions.tf" {
		return []string{"want one terraform block, in versions.tf"}
	}
	if v := literalString(tf[0].Body.Attributes["required_version"]); !strings.HasPrefix(v, ">= ") {
		problems = append(problems, fmt.Sprintf("required_version %q is not a minimum version", v))
	}
	used := map[string]bool{}
	for _, typ := range []string{"resource", "data"} {
		for _, b := range m.blocks(typ) {
			used[strings.SplitN(b.Labels[0], "_", 2)[0]] = true
		}
	}
	required := map[string]cty.Value{}
	for _, rp := range children(tf[0], "required_providers") {
		for name, a := range rp.Body.Attributes {
			v, err := literal(a.Expr)
			if err != nil || !v.Type().IsObjectType() {
				problems = append(problems, "required provider "+name+" is not a literal object")
				continue
			}
			required[name] = v
		}
	}
	for p := range used {
		v, ok := required[p]
		if !ok {
			problems = append(problems, "provider "+p+" is used but not in required_providers")
			continue
		}
		if !v.Type().HasAttribute("version") || !strings.HasPrefix(v.GetAttr("version").AsString(), ">= ") ||
			!v.Type().HasAttribute("source") {
			problems = append(problems, "provider "+p+" needs a source and a minimum version")
		}
	}
	return problems
}

// checkProviderCompat: the modules support hashicorp/aws 5.x and 6.x, but
// only one major is planned here. data.aws_region's `region` exists only in
// 6.x; its `name` (6.0) and `id` (6.47) are deprecated there, which would
// warn on every plan.
func checkProviderCompat(m *module) []string {
	var problems []string
	for _, body := range m.files {
		walkAttributes(body, func(a *hclsyntax.Attribute) {
			for _, tr := range a.Expr.Variables() {
				var parts []string
				for _, step := range tr {
					switch s := step.(type) {
					case hcl.TraverseRoot:
						parts = append(parts, s.Name)
					case hcl.TraverseAttr:
						parts = append(parts, s.Name)
					}
				}
				if len(parts) < 4 || parts[0] != "data" || parts[1] != "aws_region" {
					continue
				}
				switch parts[3] {
				case "region":
					problems = append(problems, fmt.Sprintf("%s: data.aws_region.%s.region exists only in hashicorp/aws 6.x", tr.SourceRange(), parts[2]))
				case "name", "id":
					problems = append(problems, fmt.Sprintf("%s: data.aws_region.%s.%s is deprecated in hashicorp/aws 6.x", tr.SourceRange(), parts[2], parts[3]))
				}
			}
		})
	}
	return problems
}

// TestStaticChecksCatchProblems proves each checker fails on a bad module.
func TestStaticChecksCatchProblems(t *testing.T) {
	goodRole := `
data "aws_iam_policy_document" "discovery" {
  statement {
    actions   = ["rds:DescribeDBInstances", "rds:DescribeDBClusters"]
    resources = ["*"]
  }
}
`
	tests := []struct {
		name  string
		src   string
		check func(*module) []string
		want  string // "" means no problem expected
	}{
		{"variable ok", `variable "x" {
  type        = string
  description = "A proper description."
}`, checkVariables, ""},
		{"variable without type", `variable "x" { description = "A proper description." }`, checkVariables, "has no type"},
		{"variable without description", `variable "x" { type = string }`, checkVariables, "has no description"},
		{"role with wildcard", strings.Replace(goodRole, `"rds:DescribeDBInstances", "rds:DescribeDBClusters"`, `"rds:Describe*"`, 1), checkNoWildcardActions, "wildcard"},
		{"jsonencode wildcard", `output "p" { value = jsonencode({ Statement = [{ Action = ["s3:*"] }] }) }`, checkNoWildcardActions, "wildcard action"},
		{"not_actions", `data "aws_iam_policy_document" "d" {
  statement { not_actions = ["s3:GetObject"] }
}`, checkNoWildcardActions, "not_actions"},
		{"region endpoint", `locals { r = regex("^ec2\\.([a-z0-9-]+)\\.", data.aws_region.current.endpoint)[0] }`, checkProviderCompat, ""},
		{"region v6 only", `locals { r = data.aws_region.current.region }`, checkProviderCompat, "region"},
		{"region deprecated", `locals { r = data.aws_region.this[0].name }`, checkProviderCompat, "deprecated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			problems := tc.check(parseSource(t, tc.src))
			if tc.want == "" {
				if len(problems) > 0 {
					t.Fatalf("unexpected problems: %q", problems)
				}
				return
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Fatalf("problems %q do not mention %q", problems, tc.want)
			}
		})
	}
}

// TestReadmeTables: each module's and example's README lists every input
// and output.
func TestReadmeTables(t *testing.T) {
	for _, dir := range []string{serverConfigDir, awsServerDir, kubernetesDir, "examples/aws-complete", "examples/kubernetes"} {
		t.Run(dir, func(t *testing.T) {
			m := loadModule(t, dir)
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range []string{"variable", "output"} {
				for name := range m.named(typ) {
					if !strings.Contains(string(readme), "| `"+name+"` |") {
						t.Errorf("README.md has no table row for %s %s", typ, name)
					}
				}
			}
		})
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"were not run", "terraform init", "terraform plan", "Checklist"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("terraform/README.md does not say %q", want)
		}
	}
}

// ---------------------------------------------------------------------------
// Rendered configuration against the real binary
// ---------------------------------------------------------------------------

// rendered is what a module hands to the server: the YAML, the argv after the
// binary, and for AWS the systemd unit and user data.
type rendered struct {
	yaml, unit, userData string
	args                 []string
	configPath           string
}

// renderAWS evaluates modules/aws-server's call of server-config and its
// user-data templatefile with representative inputs, applies them with
// terraform and returns the result. The config and binary paths are pointed
// at the test's files so that the rendered command lines run verbatim.
func renderAWS(t *testing.T, binary, configPath string) rendered {
	t.Helper()
	return renderAWSWith(t, binary, configPath, nil)
}

// renderAWSWith is renderAWS with more (or other) module inputs.
func renderAWSWith(t *testing.T, binary, configPath string, extra map[string]cty.Value) rendered {
	t.Helper()
	m := loadModule(t, awsServerDir)
	cfg := loadModule(t, serverConfigDir)
	data := cty.ObjectVal(map[string]cty.Value{
		"aws_partition":       cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"partition": cty.StringVal("aws")})}),
		"aws_region":          cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"endpoint": cty.StringVal("ec2.eu-west-1.amazonaws.com")})}),
		"aws_caller_identity": cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"account_id": cty.StringVal("123456789012")})}),
	})
	ev := newEvaluator(t, m, map[string]cty.Value{
		"name":       cty.StringVal("orders"),
		"vpc_id":     cty.StringVal("vpc-0123456789abcdef0"),
		"subnet_ids": cty.TupleVal([]cty.Value{cty.StringVal("subnet-0123456789abcdef0")}),
		"regions":    cty.TupleVal([]cty.Value{cty.StringVal("eu-west-1"), cty.StringVal("us-east-1")}),
		"allow_tags": cty.TupleVal([]cty.Value{cty.StringVal("team=data*"), cty.StringVal("rdsproxy:enabled")}),
		"deny_tags":  cty.TupleVal([]cty.Value{cty.StringVal("env=legacy")}),
		"log_level":  cty.StringVal("debug"),
		"binary": cty.ObjectVal(map[string]cty.Value{
			"sha256":    cty.StringVal(strings.Repeat("ab", 32)),
			"url":       cty.StringVal("https://example.com/releases/rdsproxy_linux_arm64.tar.gz"),
			"s3_bucket": cty.NullVal(cty.String), "s3_key": cty.NullVal(cty.String), "s3_region": cty.NullVal(cty.String),
		}),
		"static_targets": staticTargets(),
	}, map[string]cty.Value{"data": data, "module": moduleRefs(t, "config", cfg)})
	if extra != nil {
		ev = newEvaluator(t, m, mergeValues(map[string]cty.Value{
			"name":       cty.StringVal("orders"),
			"vpc_id":     cty.StringVal("vpc-0123456789abcdef0"),
			"subnet_ids": cty.TupleVal([]cty.Value{cty.StringVal("subnet-0123456789abcdef0")}),
			"binary": cty.ObjectVal(map[string]cty.Value{
				"sha256": cty.StringVal(strings.Repeat("ab", 32)), "url": cty.StringVal("https://example.com/rdsproxy.tar.gz"),
				"s3_bucket": cty.NullVal(cty.String), "s3_key": cty.NullVal(cty.String), "s3_region": cty.NullVal(cty.String),
			}),
		}, extra), map[string]cty.Value{"data": data, "module": moduleRefs(t, "config", cfg)})
	}

	args := ev.callArgs(t, m.one(t, "module", "config"))
	args["binary_path"], args["config_path"] = cty.StringVal(binary), cty.StringVal(configPath)

	// The user data template and its variables, exactly as the module calls it.
	var call *hclsyntax.FunctionCallExpr
	ok := false
	for _, b := range m.blocks("locals") {
		if a := b.Body.Attributes["user_data"]; a != nil {
			call, ok = a.Expr.(*hclsyntax.FunctionCallExpr)
		}
	}
	if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
		t.Fatalf("local.user_data is not a templatefile(path, vars) call")
	}
	udPath := ev.eval(t, call.Args[0]).AsString()
	udVars := ev.eval(t, call.Args[1])
	udVarsJSON := jsonValue(udVars).(map[string]any)
	udVarsJSON["binary_path"] = binary

	outs := terraformApply(t, writeRoot(t, map[string]any{
		"module": map[string]any{"cfg": mergeMaps(map[string]any{"source": absPath(t, serverConfigDir)}, jsonArgs(args))},
		"locals": map[string]any{"user_data_vars": udVarsJSON},
		"output": configOutputs(map[string]any{
			"user_data": map[string]any{"value": fmt.Sprintf("${templatefile(%q, local.user_data_vars)}", udPath)},
		}),
	}))
	return rendered{
		yaml: outputString(t, outs, "server_yaml"), unit: outputString(t, outs, "systemd_unit"),
		userData: outputString(t, outs, "user_data"), args: outputStrings(t, outs, "args"),
		configPath: outputString(t, outs, "config_path"),
	}
}

// renderKubernetes does the same for modules/kubernetes and checks that the
// ConfigMap is mounted where the container's --config points.
func renderKubernetes(t *testing.T, configPath string) rendered {
	t.Helper()
	m := loadModule(t, kubernetesDir)
	cfg := loadModule(t, serverConfigDir)
	ev := newEvaluator(t, m, map[string]cty.Value{
		"image":          cty.StringVal("registry.example.com/rdsproxy@sha256:" + strings.Repeat("0", 64)),
		"regions":        cty.TupleVal([]cty.Value{cty.StringVal("eu-central-1")}),
		"allow_tags":     cty.TupleVal([]cty.Value{cty.StringVal("team=data*")}),
		"static_targets": staticTargets(),
	}, map[string]cty.Value{"module": moduleRefs(t, "config", cfg)})
	args := ev.callArgs(t, m.one(t, "module", "config"))

	dep := m.one(t, "resource", "kubernetes_deployment_v1", "this")
	podSpec := path(t, dep, "spec", "template", "spec")
	container := path(t, podSpec, "container")
	if got := ev.eval(t, container.Body.Attributes["args"].Expr); !got.Equals(ref("module.cfg.args")).True() {
		t.Fatalf("container args are %s, want module.config.args", m.text(container.Body.Attributes["args"].Expr))
	}
	mount := ev.eval(t, path(t, container, "volume_mount").Body.Attributes["mount_path"].Expr).AsString()
	item := path(t, podSpec, "volume", "config_map", "items")
	key := ev.eval(t, item.Body.Attributes["key"].Expr).AsString()
	file := ev.eval(t, item.Body.Attributes["path"].Expr).AsString()
	if want := args["config_path"].AsString(); mount+"/"+file != want {
		t.Fatalf("ConfigMap mounted at %s/%s but --config is %s", mount, file, want)
	}
	cm := m.one(t, "resource", "kubernetes_config_map_v1", "this")
	data := ev.eval(t, cm.Body.Attributes["data"].Expr)
	if !data.Type().IsObjectType() || !data.Type().HasAttribute(key) || !data.GetAttr(key).Equals(ref("module.cfg.server_yaml")).True() {
		t.Fatalf("ConfigMap data[%q] is not module.config.server_yaml", key)
	}

	args["config_path"] = cty.StringVal(configPath)
	outs := terraformApply(t, writeRoot(t, map[string]any{
		"module": map[string]any{"cfg": mergeMaps(map[string]any{"source": absPath(t, serverConfigDir)}, jsonArgs(args))},
		"output": configOutputs(nil),
	}))
	return rendered{yaml: outputString(t, outs, "server_yaml"), args: outputStrings(t, outs, "args"), configPath: configPath}
}

func staticTargets() cty.Value {
	null := cty.NullVal(cty.String)
	return cty.TupleVal([]cty.Value{
		cty.ObjectVal(map[string]cty.Value{
			"name": cty.StringVal("reports"), "endpoint": cty.StringVal("reports.cluster-ro-abc.eu-west-1.rds.amazonaws.com:5432"),
			"region": cty.StringVal("eu-west-1"), "auth": cty.StringVal("iam"), "tls": cty.StringVal("verify-full"),
			"database": cty.StringVal("reports"), "users": cty.TupleVal([]cty.Value{cty.StringVal("analyst")}), "read_only": cty.True,
			"local_port": cty.NumberIntVal(15433), "principals": cty.TupleVal([]cty.Value{cty.StringVal("arn:aws:sts::111122223333:assumed-role/analysts/*")}),
		}),
		cty.ObjectVal(map[string]cty.Value{
			"name": cty.StringVal("legacy-admin"), "endpoint": cty.StringVal("10.0.3.7:5432"),
			"region": null, "auth": cty.StringVal("passthrough"), "tls": cty.StringVal("disable"),
			"database": null, "users": cty.EmptyTupleVal, "read_only": cty.False, "local_port": cty.NullVal(cty.Number),
			"principals": cty.EmptyTupleVal,
		}),
	})
}

func configOutputs(extra map[string]any) map[string]any {
	out := map[string]any{}
	for _, name := range []string{"server_yaml", "args", "systemd_unit", "exec_start", "config_path"} {
		out[name] = map[string]any{"value": "${module.cfg." + name + "}"}
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func mergeValues(a, b map[string]cty.Value) map[string]cty.Value {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func mergeMaps(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// checkContractKeys parses the YAML and checks every key against the CLI contract.
func checkContractKeys(t *testing.T, doc string) map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatalf("rendered config is not YAML: %v\n%s", err, doc)
	}
	for k := range cfg {
		if !slices.Contains(contractKeys, k) {
			t.Errorf("rendered config key %q is not a `rdsproxy server` flag", k)
		}
	}
	targets, _ := cfg["targets"].([]any)
	for _, tg := range targets {
		for k := range tg.(map[string]any) {
			if !slices.Contains(contractTargetKeys, k) {
				t.Errorf("rendered target key %q is not a target setting", k)
			}
		}
	}
	return cfg
}

func TestRenderedConfigKeys(t *testing.T) {
	dir := t.TempDir()
	aws := renderAWS(t, "/usr/local/bin/rdsproxy", filepath.Join(dir, "server.yaml"))
	cfg := checkContractKeys(t, aws.yaml)
	for key, want := range map[string]any{
		"listen": "127.0.0.1:5480", "admin-addr": "127.0.0.1:9480", "log-level": "debug",
		"region": []any{"eu-west-1", "us-east-1"}, "allow-tag": []any{"team=data*", "rdsproxy:enabled"},
		"server-id": "orders", // shared by every instance of the group
	} {
		if got := fmt.Sprint(cfg[key]); got != fmt.Sprint(want) {
			t.Errorf("aws: %s = %s, want %v", key, got, want)
		}
	}
	kube := renderKubernetes(t, filepath.Join(dir, "server.yaml"))
	cfg = checkContractKeys(t, kube.yaml)
	if cfg["server-id"] != "rdsproxy" {
		t.Errorf("kubernetes: server-id %v, want the Deployment's name, shared by its pods (not each pod's host name)", cfg["server-id"])
	}
	if cfg["listen"] != "127.0.0.1:5480" || cfg["admin-addr"] != "0.0.0.0:9480" {
		t.Errorf("kubernetes: listen %v admin-addr %v; want the client port on loopback and the admin port on all addresses", cfg["listen"], cfg["admin-addr"])
	}
}

// TestRenderedConfigAgainstBinary runs what the modules render through the
// real binary's parser: the YAML with `server --config FILE --dry-run`, the
// systemd ExecStart and user-data lines verbatim, the container args.
func TestRenderedConfigAgainstBinary(t *testing.T) {
	terraformBin(t)
	bin := buildRdsproxy(t)
	dir := t.TempDir()

	t.Run("aws", func(t *testing.T) {
		configPath := filepath.Join(dir, "aws.yaml")
		r := renderAWS(t, bin, configPath)
		writeFile(t, configPath, r.yaml)

		argv := execStart(t, r.unit)
		if argv[0] != bin || !slices.Equal(argv[1:], r.args) || !slices.Equal(r.args, []string{"server", "--config", configPath}) {
			t.Fatalf("ExecStart %q does not run %s %q", argv, bin, r.args)
		}
		out := dryRun(t, argv)
		for _, want := range []string{"team=data*", "us-east-1", "reports", "local-port: 15433"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry-run output does not show %q:\n%s", want, out)
			}
		}

		// The user data installs exactly these files and checks them with
		// the same dry-run before starting the unit.
		for _, want := range []string{r.yaml, r.unit} {
			if !strings.Contains(r.userData, base64.StdEncoding.EncodeToString([]byte(want))) {
				t.Errorf("user data does not install the rendered file:\n%s", want)
			}
		}
		line := userDataDryRun(t, r.userData)
		if res := run(t, dir, dryRunEnv(t), "bash", "-euo", "pipefail", "-c", line); res.err != nil {
			t.Errorf("user data dry-run line %q: %v\n%s%s", line, res.err, res.stdout, res.stderr)
		}
		checkNegative(t, bin, r.yaml, dir)
	})

	t.Run("kubernetes", func(t *testing.T) {
		configPath := filepath.Join(dir, "kube.yaml")
		r := renderKubernetes(t, configPath)
		writeFile(t, configPath, r.yaml)
		out := dryRun(t, append([]string{bin}, r.args...))
		if !strings.Contains(out, "0.0.0.0:9480") {
			t.Errorf("dry-run output does not show the admin address:\n%s", out)
		}
		checkNegative(t, bin, r.yaml, dir)
	})

	t.Run("every key", func(t *testing.T) {
		configPath := filepath.Join(dir, "every.yaml")
		r := renderEveryKey(t, dir, configPath)
		cfg := checkContractKeys(t, r.yaml)
		for _, k := range contractKeys {
			if _, ok := cfg[k]; !ok {
				t.Errorf("key %s was not rendered", k)
			}
		}
		writeFile(t, configPath, r.yaml)
		out := dryRun(t, append([]string{bin}, r.args...))
		for _, want := range []string{"127.0.0.1:15432", "require-identity: false", "assumed-role/analysts/*"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry-run output does not show %q:\n%s", want, out)
			}
		}
		checkNegative(t, bin, r.yaml, dir)
	})
}

// renderEveryKey applies modules/server-config with every variable set, so
// that every key its template can emit is shown to the binary.
func renderEveryKey(t *testing.T, dir, configPath string) rendered {
	t.Helper()
	certFile, keyFile := selfSignedPair(t, dir)
	set := map[string]any{
		"source": absPath(t, serverConfigDir), "listen": "127.0.0.1:0", "admin_addr": "127.0.0.1:0",
		"regions": []any{"eu-west-1"}, "allow_tags": []any{"team=data*", "rdsproxy:enabled"},
		"deny_tags": []any{"env=legacy"}, "refresh_interval": "2m",
		"dial_map": []any{"db.example.internal:5432=127.0.0.1:15432"},
		"ca_file":  certFile, "tls_cert": certFile, "tls_key": keyFile,
		"max_sessions": 50, "require_identity": false, "revoke_sessions": true, "startup_timeout": "5s", "dial_timeout": "3s", "max_startup_size": 9000,
		"drain_timeout": "1m", "log_format": "text", "log_level": "warn", "server_id": "orders",
		"static_targets": jsonValue(staticTargets()), "config_path": configPath,
	}
	vars := loadModule(t, serverConfigDir).named("variable")
	for name := range vars {
		if _, ok := set[name]; !ok && name != "binary_path" && name != "aws_region" {
			t.Fatalf("renderEveryKey does not set variable %s", name)
		}
	}
	outs := terraformApply(t, writeRoot(t, map[string]any{"module": map[string]any{"cfg": set}, "output": configOutputs(nil)}))
	return rendered{yaml: outputString(t, outs, "server_yaml"), args: outputStrings(t, outs, "args"), configPath: configPath}
}

// selfSignedPair writes a throwaway self-signed certificate and key (PEM).
func selfSignedPair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rdsproxy-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// checkNegative: the same file with one key misspelled must be rejected, so
// the positive runs above prove something.
func checkNegative(t *testing.T, bin, doc, dir string) {
	t.Helper()
	bad := strings.Replace(doc, "\nrefresh-interval:", "\nrefresh-intervall:", 1)
	if bad == doc {
		t.Fatal("negative control: no refresh-interval key to misspell")
	}
	path := filepath.Join(dir, "misspelled.yaml")
	writeFile(t, path, bad)
	res := run(t, dir, dryRunEnv(t), bin, "server", "--config", path, "--dry-run")
	if res.err == nil {
		t.Fatalf("dry-run accepted a misspelled key:\n%s", res.stdout)
	}
	if strings.TrimSpace(res.stderr+res.stdout) == "" {
		t.Fatalf("dry-run rejected a misspelled key without a message")
	}
	t.Logf("misspelled key rejected: %s", strings.TrimSpace(res.stderr))
}

func dryRun(t *testing.T, argv []string) string {
	t.Helper()
	res := run(t, filepath.Dir(argv[0]), dryRunEnv(t), argv[0], append(argv[1:], "--dry-run")...)
	if res.err != nil {
		t.Fatalf("%q --dry-run: %v\n%s%s", argv, res.err, res.stdout, res.stderr)
	}
	return res.stdout + res.stderr
}

// execStart splits the unit's ExecStart line; the module's validations keep
// it free of quotes and specifiers, so whitespace splitting is systemd's.
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			lines = append(lines, v)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one ExecStart line, found %d", len(lines))
	}
	if strings.ContainsAny(lines[0], `"'%$\`) {
		t.Fatalf("ExecStart %q needs systemd quoting", lines[0])
	}
	return strings.Fields(lines[0])
}

func userDataDryRun(t *testing.T, script string) string {
	t.Helper()
	for _, l := range strings.Split(script, "\n") {
		if strings.HasSuffix(l, " --dry-run") {
			return l
		}
	}
	t.Fatalf("user data has no --dry-run line:\n%s", script)
	return ""
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestUserDataScript: the rendered bootstrap script is valid bash, verifies
// the checksum before installing, and has both delivery variants.
func TestUserDataScript(t *testing.T) {
	r := renderAWS(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml")
	script := filepath.Join(t.TempDir(), "user-data.sh")
	writeFile(t, script, r.userData)
	if res := run(t, ".", os.Environ(), "bash", "-n", script); res.err != nil {
		t.Fatalf("bash -n: %v\n%s", res.err, res.stderr)
	}
	check := strings.Index(r.userData, "sha256sum --check")
	install := strings.Index(r.userData, "install -D -m 0755")
	if check < 0 || install < 0 || check > install {
		t.Fatalf("the checksum must be verified before the binary is installed")
	}
	if !strings.Contains(r.userData, "'"+strings.Repeat("ab", 32)+"  '") {
		t.Errorf("user data does not check the configured sha256")
	}
	if n := len(encodeUserData(r.userData)); n > 16384 {
		t.Errorf("user data is %d bytes gzipped and base64-encoded; EC2 accepts at most 16384", n)
	}
	if !strings.Contains(r.userData, "--proto '=https'") {
		t.Errorf("user data may download over plain http")
	}
}

// TestSystemdUnit: systemd itself accepts the rendered unit without warnings.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("NOTICE: systemd-analyze not installed; the unit was NOT verified")
	}
	r := renderAWS(t, "/bin/true", "/etc/rdsproxy/server.yaml")
	start, end := strings.Index(r.unit, "DynamicUser=yes"), strings.Index(r.unit, "UMask=0077")
	if start < 0 || end < start {
		t.Fatal("the unit has no DynamicUser..UMask hardening block")
	}
	unhardened := r.unit[:start] + r.unit[end+len("UMask=0077"):]
	for _, tc := range []struct {
		name, unit        string
		verifies, exposed bool
	}{
		{"rendered", r.unit, true, false},
		{"misspelled directive", strings.Replace(r.unit, "ProtectClock=", "ProtectClck=", 1), false, false},
		{"without hardening", unhardened, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "rdsproxy.service")
			writeFile(t, file, tc.unit)
			res := run(t, filepath.Dir(file), os.Environ(), analyze, "verify", file)
			clean := res.err == nil && strings.TrimSpace(res.stderr) == ""
			if clean != tc.verifies {
				t.Fatalf("systemd-analyze verify: clean=%v want %v: %v\n%s", clean, tc.verifies, res.err, res.stderr)
			}
			// Exposure above 1.5 on systemd's 0-10 scale fails the threshold.
			res = run(t, filepath.Dir(file), os.Environ(), analyze, "security", "--offline=yes", "--threshold=15", file)
			if exposed := res.err != nil; exposed != tc.exposed {
				t.Fatalf("systemd-analyze security: over threshold=%v want %v\n%s", exposed, tc.exposed, lastLine(res.stdout))
			}
			t.Log(lastLine(res.stdout))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestValidationRejectsBadInput: the variable validations of the modules, run
// by terraform itself (variables.tf of each module is planned on its own, as
// the AWS and Kubernetes resources need providers).
func TestValidationRejectsBadInput(t *testing.T) {
	good := map[string]map[string]any{
		serverConfigDir: {},
		awsServerDir: {
			"vpc_id": "vpc-0123", "subnet_ids": []any{"subnet-0123"},
			"binary": map[string]any{"sha256": strings.Repeat("ab", 32), "url": "https://example.com/rdsproxy"},
		},
		kubernetesDir: {"image": "registry.example.com/rdsproxy:1", "regions": []any{"eu-west-1"}},
	}
	tests := []struct {
		name, dir string
		set       map[string]any
		want      string
	}{
		{"server-config ok", serverConfigDir, nil, ""},
		{"tag rule with comma", serverConfigDir, map[string]any{"allow_tags": []any{"a=b,c"}}, "allow tag rule"},
		{"bad duration", serverConfigDir, map[string]any{"refresh_interval": "1 minute"}, "refresh_interval"},
		{"refresh below the server's 10s", serverConfigDir, map[string]any{"refresh_interval": "9999ms"}, "at least 10s"},
		{"refresh of 10s", serverConfigDir, map[string]any{"refresh_interval": "10s"}, ""},
		{"startup size that refuses identities", serverConfigDir, map[string]any{"max_startup_size": 8000}, "at least 8024"},
		{"bad local port", serverConfigDir, map[string]any{"static_targets": []any{map[string]any{"name": "a", "endpoint": "h:5432", "auth": "passthrough", "local_port": 70000}}}, "local_port"},
		{"iam target without region", serverConfigDir, map[string]any{"static_targets": []any{map[string]any{"name": "a", "endpoint": "h:5432"}}}, "needs a region"},
		{"tls cert without key", serverConfigDir, map[string]any{"tls_cert": "/c.pem"}, "tls_cert and tls_key together"},
		{"path with space", serverConfigDir, map[string]any{"config_path": "/etc/rds proxy.yaml"}, "config_path"},
		{"aws ok", awsServerDir, nil, ""},
		{"aws both url and s3", awsServerDir, map[string]any{"binary": map[string]any{"sha256": strings.Repeat("ab", 32), "url": "https://e.com/x", "s3_bucket": "bkt", "s3_key": "k"}}, "exactly one of binary.url"},
		{"aws bad sha", awsServerDir, map[string]any{"binary": map[string]any{"sha256": "abc", "url": "https://e.com/x"}}, "64 lower-case hex"},
		{"aws url with quote", awsServerDir, map[string]any{"binary": map[string]any{"sha256": strings.Repeat("ab", 32), "url": "https://e.com/x'y"}}, "binary.url"},
		{"aws http url", awsServerDir, map[string]any{"binary": map[string]any{"sha256": strings.Repeat("ab", 32), "url": "http://e.com/x"}}, "binary.url"},
		{"aws privileged port", awsServerDir, map[string]any{"port": 80}, "1024 to 65535"},
		{"kubernetes ok", kubernetesDir, nil, ""},
		{"kubernetes no region", kubernetesDir, map[string]any{"regions": []any{}}, "at least one region"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(tc.dir, "variables.tf")
			if tc.dir == serverConfigDir {
				src = tc.dir // the whole provider-free module, with its output preconditions
			}
			call := map[string]any{"source": absPath(t, variablesOnly(t, src))}
			mergeMaps(call, good[tc.dir])
			mergeMaps(call, tc.set)
			out, err := terraformPlan(t, writeRoot(t, map[string]any{"module": map[string]any{"m": call}}))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("plan failed: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("plan accepted bad input %v", tc.set)
			}
			if !strings.Contains(strings.Join(strings.Fields(out), " "), tc.want) {
				t.Fatalf("plan failed without mentioning %q:\n%s", tc.want, out)
			}
		})
	}
}

// variablesOnly returns a module directory to call: src itself when it is a
// directory, else a temporary module holding a copy of that one file.
func variablesOnly(t *testing.T, src string) string {
	t.Helper()
	if fi, err := os.Stat(src); err == nil && fi.IsDir() {
		return src
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "variables.tf"), string(b))
	return dir
}
