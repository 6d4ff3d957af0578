package terraform_test

// Helpers for terraform_test.go: parsing the modules with hclsyntax, a small
// static evaluator for the expressions that wire a module to
// modules/server-config, and runners for the terraform and rdsproxy binaries.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// commandTimeout bounds every external command (terraform, go build, rdsproxy).
const commandTimeout = 10 * time.Minute

// module is one directory of .tf files, parsed.
type module struct {
	dir   string
	files map[string]*hclsyntax.Body
	src   map[string][]byte
}

// loadModule parses every .tf file directly in dir.
func loadModule(t *testing.T, dir string) *module {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		t.Fatalf("glob %s: %v", dir, err)
	}
	if len(paths) == 0 {
		t.Fatalf("no .tf files in %s", dir)
	}
	m := &module{dir: dir, files: map[string]*hclsyntax.Body{}, src: map[string][]byte{}}
	p := hclparse.NewParser()
	for _, path := range paths {
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %s", path, diags.Error())
		}
		m.files[path] = f.Body.(*hclsyntax.Body)
		m.src[path] = f.Bytes
	}
	return m
}

// parseSource parses one in-memory file as a module (checker negative controls).
func parseSource(t *testing.T, src string) *module {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "inline.tf", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("parse inline source: %s", diags.Error())
	}
	return &module{
		dir:   "inline",
		files: map[string]*hclsyntax.Body{"inline.tf": f.Body.(*hclsyntax.Body)},
		src:   map[string][]byte{"inline.tf": f.Bytes},
	}
}

// moduleDirs lists every directory below root that holds .tf files.
func moduleDirs(t *testing.T, root string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".tf") {
			dir := filepath.Dir(path)
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	sort.Strings(dirs)
	return dirs
}

// blocks returns the top-level blocks of the given type whose leading labels
// equal labels, in a stable order.
func (m *module) blocks(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	names := make([]string, 0, len(m.files))
	for name := range m.files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, b := range m.files[name].Blocks {
			if b.Type == typ && len(b.Labels) >= len(labels) && slices.Equal(b.Labels[:len(labels)], labels) {
				out = append(out, b)
			}
		}
	}
	return out
}

// named returns the top-level blocks of a type keyed by their last label.
func (m *module) named(typ string) map[string]*hclsyntax.Block {
	out := map[string]*hclsyntax.Block{}
	for _, b := range m.blocks(typ) {
		out[b.Labels[len(b.Labels)-1]] = b
	}
	return out
}

// one returns the single block typ/labels or fails.
func (m *module) one(t *testing.T, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := m.blocks(typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("%s: want exactly one %s %q block, found %d", m.dir, typ, labels, len(bs))
	}
	return bs[0]
}

// children returns the nested blocks of b with the given type.
func children(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

// path follows a chain of nested block types, requiring exactly one at each step.
func path(t *testing.T, b *hclsyntax.Block, types ...string) *hclsyntax.Block {
	t.Helper()
	for _, typ := range types {
		cs := children(b, typ)
		if len(cs) != 1 {
			t.Fatalf("%s %q: want exactly one nested %q block, found %d", b.Type, b.Labels, typ, len(cs))
		}
		b = cs[0]
	}
	return b
}

// literal evaluates an expression without any context (literals only).
func literal(expr hclsyntax.Expression) (cty.Value, error) {
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, errors.New(diags.Error())
	}
	return v, nil
}

// stringList converts a list/tuple of strings to []string.
func stringList(v cty.Value) ([]string, error) {
	if v.IsNull() || !(v.Type().IsListType() || v.Type().IsTupleType() || v.Type().IsSetType()) {
		return nil, fmt.Errorf("want a list of strings, got %s", v.Type().FriendlyName())
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			return nil, fmt.Errorf("want a list of strings, found a %s element", e.Type().FriendlyName())
		}
		out = append(out, e.AsString())
	}
	return out, nil
}

// text is the source text of an expression.
func (m *module) text(expr hclsyntax.Expression) string {
	rng := expr.Range()
	return string(m.src[rng.Filename][rng.Start.Byte:rng.End.Byte])
}

// ---------------------------------------------------------------------------
// Static evaluation of a module's variables, locals and module-call arguments
// ---------------------------------------------------------------------------

// refPattern marks a reference that the generated root module must keep as
// an expression (e.g. an output of the called server-config module).
var refPattern = regexp.MustCompile(`@@REF:([A-Za-z0-9_.]+)@@`)

func ref(expr string) cty.Value { return cty.StringVal("@@REF:" + expr + "@@") }

// evaluator evaluates expressions of one module with its variables set to
// their defaults (or overrides), its locals computed where possible, and
// data sources / called modules replaced by the values in extra.
type evaluator struct {
	ctx *hcl.EvalContext
}

func newEvaluator(t *testing.T, m *module, overrides map[string]cty.Value, extra map[string]cty.Value) *evaluator {
	t.Helper()
	vars := map[string]cty.Value{}
	for name, b := range m.named("variable") {
		vars[name] = cty.NullVal(cty.DynamicPseudoType)
		if a, ok := b.Body.Attributes["default"]; ok {
			v, err := literal(a.Expr)
			if err != nil {
				t.Fatalf("%s: default of variable %s is not a literal: %v", m.dir, name, err)
			}
			vars[name] = v
		}
	}
	for name, v := range overrides {
		if _, ok := vars[name]; !ok {
			t.Fatalf("%s: override for undeclared variable %q", m.dir, name)
		}
		vars[name] = v
	}
	// As Terraform does: convert each value to the variable's type, with
	// optional attributes' defaults (so {} is a map, [] a list).
	for name, b := range m.named("variable") {
		a, ok := b.Body.Attributes["type"]
		if !ok || vars[name].IsNull() {
			continue
		}
		ty, defaults, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
		if diags.HasErrors() {
			t.Fatalf("%s: type of variable %s: %s", m.dir, name, diags.Error())
		}
		v := vars[name]
		if defaults != nil {
			v = defaults.Apply(v)
		}
		v, err := convert.Convert(v, ty)
		if err != nil {
			t.Fatalf("%s: variable %s: %v", m.dir, name, err)
		}
		vars[name] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  cty.ObjectVal(vars),
			"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(absPath(t, m.dir))}),
		},
		Functions: functions(),
	}
	for k, v := range extra {
		ctx.Variables[k] = v
	}
	ctx.Variables["local"] = cty.ObjectVal(evalLocals(m, ctx))
	return &evaluator{ctx: ctx}
}

// evalLocals computes every local that depends only on known values; the
// others (resource attributes, unsupported functions) are left out, so that
// using one fails loudly.
func evalLocals(m *module, ctx *hcl.EvalContext) map[string]cty.Value {
	pending := map[string]hclsyntax.Expression{}
	for _, b := range m.blocks("locals") {
		for name, a := range b.Body.Attributes {
			pending[name] = a.Expr
		}
	}
	done := map[string]cty.Value{}
	for progress := true; progress; {
		progress = false
		ctx.Variables["local"] = cty.ObjectVal(done)
		for name, expr := range pending {
			v, diags := expr.Value(ctx)
			if diags.HasErrors() || !v.IsWhollyKnown() {
				continue
			}
			done[name] = v
			delete(pending, name)
			progress = true
			ctx.Variables["local"] = cty.ObjectVal(done)
		}
	}
	return done
}

func (e *evaluator) eval(t *testing.T, expr hclsyntax.Expression) cty.Value {
	t.Helper()
	v, diags := expr.Value(e.ctx)
	if diags.HasErrors() {
		t.Fatalf("evaluate %s: %s", expr.Range(), diags.Error())
	}
	return v
}

// callArgs evaluates the arguments of a module block (all but source).
func (e *evaluator) callArgs(t *testing.T, call *hclsyntax.Block) map[string]cty.Value {
	t.Helper()
	out := map[string]cty.Value{}
	for name, a := range call.Body.Attributes {
		if name == "source" || name == "version" || name == "providers" {
			continue
		}
		out[name] = e.eval(t, a.Expr)
	}
	return out
}

// functions are the few Terraform functions the wiring expressions use,
// taken from cty's stdlib (Terraform's own implementations are the same).
func functions() map[string]function.Function {
	return map[string]function.Function{
		"ceil":       stdlib.CeilFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"concat":     stdlib.ConcatFunc,
		"join":       stdlib.JoinFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"length":     stdlib.LengthFunc,
		"merge":      stdlib.MergeFunc,
		"regex":      stdlib.RegexFunc,
		"setproduct": stdlib.SetProductFunc,
		"tonumber":   stdlib.MakeToFunc(cty.Number),
		"tostring":   stdlib.MakeToFunc(cty.String),
		"templatefile": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
			Type:   function.StaticReturnType(cty.String),
			Impl:   templateFile,
		}),
	}
}

// templateFile is Terraform's templatefile for templates that use only
// interpolation, directives and the functions above.
func templateFile(args []cty.Value, _ cty.Type) (cty.Value, error) {
	p := args[0].AsString()
	src, err := os.ReadFile(p)
	if err != nil {
		return cty.NilVal, err
	}
	expr, diags := hclsyntax.ParseTemplate(src, p, hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	vars := map[string]cty.Value{}
	for it := args[1].ElementIterator(); it.Next(); {
		k, v := it.Element()
		vars[k.AsString()] = v
	}
	v, diags := expr.Value(&hcl.EvalContext{Variables: vars, Functions: functions()})
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return convert.Convert(v, cty.String)
}

// moduleRefs builds module.<name>.<output> = ref("module.cfg.<output>") for a
// called module, so that generated configuration can refer to its outputs.
func moduleRefs(t *testing.T, callName string, called *module) cty.Value {
	t.Helper()
	outs := map[string]cty.Value{}
	for name := range called.named("output") {
		outs[name] = ref("module.cfg." + name)
	}
	return cty.ObjectVal(map[string]cty.Value{callName: cty.ObjectVal(outs)})
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("abs %s: %v", p, err)
	}
	return a
}

// ---------------------------------------------------------------------------
// Generated root modules (Terraform JSON syntax)
// ---------------------------------------------------------------------------

// jsonValue converts a cty value to encoding/json data for Terraform's JSON
// syntax, where strings are templates: literal "${" and "%{" are escaped and
// reference markers become interpolations.
func jsonValue(v cty.Value) any {
	if v.IsNull() {
		return nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		s := strings.ReplaceAll(v.AsString(), "${", "$${")
		s = strings.ReplaceAll(s, "%{", "%%{")
		return refPattern.ReplaceAllString(s, "$${$1}")
	case ty == cty.Number:
		return json.Number(v.AsBigFloat().Text('f', -1))
	case ty == cty.Bool:
		return v.True()
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		out := []any{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = append(out, jsonValue(e))
		}
		return out
	case ty.IsMapType() || ty.IsObjectType():
		out := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			out[k.AsString()] = jsonValue(e)
		}
		return out
	}
	panic("unsupported cty type " + ty.FriendlyName())
}

func jsonArgs(args map[string]cty.Value) map[string]any {
	out := map[string]any{}
	for k, v := range args {
		out[k] = jsonValue(v)
	}
	return out
}

// writeRoot writes main.tf.json in a fresh temporary directory.
func writeRoot(t *testing.T, root map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		t.Fatalf("encode root module: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf.json"), b, 0o600); err != nil {
		t.Fatalf("write root module: %v", err)
	}
	return dir
}

// ---------------------------------------------------------------------------
// External commands
// ---------------------------------------------------------------------------

// terraformBin returns the terraform binary, skipping (with a notice) when
// it is not installed.
func terraformBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("NOTICE: terraform binary not found in PATH; this check did NOT run")
	}
	return bin
}

type result struct {
	stdout, stderr string
	err            error
}

func run(t *testing.T, dir string, env []string, name string, args ...string) result {
	t.Helper()
	return runWithin(t, commandTimeout, dir, env, name, args...)
}

// runWithin is run with its own time limit.
func runWithin(t *testing.T, limit time.Duration, dir string, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// terraformEnv isolates terraform from the user's CLI configuration and
// turns off update checks (no network is used).
func terraformEnv(t *testing.T) []string {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(rc, nil, 0o600); err != nil {
		t.Fatalf("write %s: %v", rc, err)
	}
	return append(os.Environ(),
		"CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0", "TF_CLI_CONFIG_FILE="+rc)
}

// terraformApply initialises and applies a provider-free root module and
// returns its outputs.
func terraformApply(t *testing.T, dir string) map[string]json.RawMessage {
	t.Helper()
	bin, env := terraformBin(t), terraformEnv(t)
	for _, args := range [][]string{
		{"init", "-input=false", "-no-color", "-backend=false"},
		{"apply", "-auto-approve", "-input=false", "-no-color", "-lock=false"},
	} {
		if r := run(t, dir, env, bin, args...); r.err != nil {
			t.Fatalf("terraform %s: %v\n%s%s", args[0], r.err, r.stdout, r.stderr)
		}
	}
	r := run(t, dir, env, bin, "output", "-json", "-no-color")
	if r.err != nil {
		t.Fatalf("terraform output: %v\n%s", r.err, r.stderr)
	}
	var raw map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("decode terraform output: %v\n%s", err, r.stdout)
	}
	out := map[string]json.RawMessage{}
	for k, v := range raw {
		out[k] = v.Value
	}
	return out
}

// terraformPlan initialises and plans a provider-free root module and
// returns the combined output and the error.
func terraformPlan(t *testing.T, dir string) (string, error) {
	t.Helper()
	bin, env := terraformBin(t), terraformEnv(t)
	if r := run(t, dir, env, bin, "init", "-input=false", "-no-color", "-backend=false"); r.err != nil {
		t.Fatalf("terraform init: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	r := run(t, dir, env, bin, "plan", "-input=false", "-no-color", "-lock=false")
	return r.stdout + r.stderr, r.err
}

func outputString(t *testing.T, outs map[string]json.RawMessage, name string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(outs[name], &s); err != nil {
		t.Fatalf("output %s is not a string: %v", name, err)
	}
	return s
}

func outputStrings(t *testing.T, outs map[string]json.RawMessage, name string) []string {
	t.Helper()
	var s []string
	if err := json.Unmarshal(outs[name], &s); err != nil {
		t.Fatalf("output %s is not a list of strings: %v", name, err)
	}
	return s
}

// buildRdsproxy builds the real binary from the repository root.
func buildRdsproxy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	// Built as `make build` and the release build it (static, -trimpath),
	// which also shares their build cache. A cold build on a busy 2-core
	// machine takes longer than commandTimeout (it was killed at 3 minutes).
	r := runWithin(t, 15*time.Minute, "..", append(os.Environ(), "CGO_ENABLED=0"), "go", "build", "-trimpath", "-o", bin, "github.com/rdsproxy/rdsproxy")
	if r.err != nil {
		t.Fatalf("go build github.com/rdsproxy/rdsproxy (the server CLI with --dry-run is required): %v\n%s%s",
			r.err, r.stdout, r.stderr)
	}
	return bin
}

// dryRunEnv is a minimal environment: no RDSPROXY_* variable may override
// the config file under test, and nothing may reach the network.
func dryRunEnv(t *testing.T) []string {
	t.Helper()
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION=eu-west-1",
	}
}
