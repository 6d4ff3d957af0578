package terraform_test

// The Kubernetes module's NetworkPolicy, rendered without the kubernetes
// provider (which is not mirrored here): the resource's blocks, dynamic ones
// included, are expanded by the module's own expressions with the static
// evaluator, and the result is read as the Kubernetes API would read it.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/rdsproxy/rdsproxy/internal/relay"
	"github.com/rdsproxy/rdsproxy/server"
)

// expandBlock renders a block's body as the provider receives it: each
// attribute evaluated, each nested block (a dynamic one once per for_each
// element, with its iterator bound) as a list of objects under its type.
func expandBlock(t *testing.T, ctx *hcl.EvalContext, body *hclsyntax.Body) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, a := range body.Attributes {
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("evaluate %s: %s", a.Range(), diags.Error())
		}
		out[name] = jsonValue(v)
	}
	for _, b := range body.Blocks {
		if b.Type != "dynamic" {
			out[b.Type] = append(list(out[b.Type]), expandBlock(t, ctx, b.Body))
			continue
		}
		label := b.Labels[0]
		each, diags := b.Body.Attributes["for_each"].Expr.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("evaluate for_each of dynamic %s: %s", label, diags.Error())
		}
		content := children(b, "content")
		if len(content) != 1 || b.Body.Attributes["iterator"] != nil {
			t.Fatalf("dynamic %s: want one content block and no iterator attribute", label)
		}
		for it := each.ElementIterator(); it.Next(); {
			k, v := it.Element()
			child := ctx.NewChild()
			child.Variables = map[string]cty.Value{label: cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
			out[label] = append(list(out[label]), expandBlock(t, child, content[0].Body))
		}
	}
	return out
}

// networkPolicy renders the module's kubernetes_network_policy_v1 spec for
// the given inputs; nil when count makes none.
func networkPolicy(t *testing.T, vars map[string]cty.Value) map[string]any {
	t.Helper()
	m := loadModule(t, kubernetesDir)
	ev := newEvaluator(t, m, vars, map[string]cty.Value{})
	np := m.one(t, "resource", "kubernetes_network_policy_v1", "this")
	if n := ev.eval(t, np.Body.Attributes["count"].Expr); !n.Equals(cty.NumberIntVal(1)).True() {
		return nil
	}
	// A JSON round trip turns json.Number and nested slices into plain values.
	b, err := json.Marshal(expandBlock(t, ev.ctx, path(t, np, "spec").Body))
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

// admitted lists, for the rendered spec, "port from peer" for every ingress
// rule, in the words of the NetworkPolicy API.
func admitted(spec map[string]any) []string {
	var out []string
	for _, r := range list(spec["ingress"]) {
		var ports, peers []string
		for _, p := range list(obj(r)["ports"]) {
			ports = append(ports, fmt.Sprint(obj(p)["protocol"], "/", obj(p)["port"]))
		}
		if len(ports) == 0 {
			ports = []string{"every port"}
		}
		for _, f := range list(obj(r)["from"]) {
			var parts []string
			for _, ns := range list(obj(f)["namespace_selector"]) {
				for _, e := range list(obj(ns)["match_expressions"]) {
					parts = append(parts, fmt.Sprintf("namespaces %s %s %v", str(obj(e)["key"]), str(obj(e)["operator"]), obj(e)["values"]))
				}
				if labels := obj(obj(ns)["match_labels"]); len(labels) > 0 || len(list(obj(ns)["match_expressions"])) == 0 {
					parts = append(parts, fmt.Sprintf("namespaces labelled %v", labels))
				}
			}
			for _, ps := range list(obj(f)["pod_selector"]) {
				parts = append(parts, fmt.Sprintf("pods labelled %v", obj(ps)["match_labels"]))
			}
			for _, ip := range list(obj(f)["ip_block"]) {
				parts = append(parts, fmt.Sprintf("cidr %v", obj(ip)["cidr"]))
			}
			peers = append(peers, strings.Join(parts, " and "))
		}
		if len(peers) == 0 {
			peers = []string{"anywhere"}
		}
		for _, p := range ports {
			for _, peer := range peers {
				out = append(out, p+" from "+peer)
			}
		}
	}
	return out
}

func TestKubernetesNetworkPolicy(t *testing.T) {
	base := map[string]cty.Value{"regions": cty.TupleVal([]cty.Value{cty.StringVal("eu-west-1")})}
	with := func(kv ...any) map[string]cty.Value {
		out := map[string]cty.Value{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1].(cty.Value)
		}
		return out
	}
	prometheus := cty.MapVal(map[string]cty.Value{"app.kubernetes.io/name": cty.StringVal("prometheus")})
	monitoring := cty.TupleVal([]cty.Value{cty.StringVal("monitoring")})
	tests := []struct {
		name  string
		vars  map[string]cty.Value
		none  bool
		admit []string
	}{
		{name: "default: a policy with no ingress at all", vars: with()},
		{name: "prometheus namespace", vars: with("admin_ingress_namespaces", monitoring),
			admit: []string{"TCP/9480 from namespaces kubernetes.io/metadata.name In [monitoring]"}},
		{name: "prometheus pods in a namespace", vars: with("admin_ingress_namespaces", monitoring, "admin_ingress_pod_labels", prometheus, "admin_port", cty.NumberIntVal(9999)),
			admit: []string{"TCP/9999 from namespaces kubernetes.io/metadata.name In [monitoring] and pods labelled map[app.kubernetes.io/name:prometheus]"}},
		{name: "prometheus pods in the server's namespace", vars: with("admin_ingress_pod_labels", prometheus),
			admit: []string{"TCP/9480 from pods labelled map[app.kubernetes.io/name:prometheus]"}},
		{name: "turned off", vars: with("create_network_policy", cty.False), none: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := networkPolicy(t, tc.vars)
			if tc.none {
				if spec != nil {
					t.Fatalf("a NetworkPolicy is created: %v", spec)
				}
				return
			}
			if spec == nil {
				t.Fatal("no NetworkPolicy is created")
			}
			if got := fmt.Sprint(spec["policy_types"]); got != "[Ingress]" {
				t.Errorf("policy_types %s, want [Ingress]: without it an empty ingress list would admit nothing only by accident", got)
			}
			sel := obj(list(spec["pod_selector"])[0])["match_labels"]
			if fmt.Sprint(sel) != "map[app.kubernetes.io/instance:rdsproxy app.kubernetes.io/name:rdsproxy]" {
				t.Errorf("pod_selector %v does not select exactly the server's pods", sel)
			}
			got := admitted(spec)
			if !slices.Equal(got, tc.admit) {
				t.Errorf("the policy admits %q, want %q", got, tc.admit)
			}
			for _, a := range got {
				if strings.Contains(a, "/5480 ") || strings.Contains(a, "every port") || strings.HasSuffix(a, "from anywhere") {
					t.Errorf("the policy admits %q: the client port or every source", a)
				}
			}
		})
	}
}

// TestNetworkPolicyCheckCatchesProblems: admitted() reads what a broader
// policy would admit, so the assertions above can fail.
func TestNetworkPolicyCheckCatchesProblems(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want string
	}{
		{`{"ingress":[{}]}`, "every port from anywhere"},
		{`{"ingress":[{"ports":[{"port":"5480","protocol":"TCP"}]}]}`, "TCP/5480 from anywhere"},
		{`{"ingress":[{"from":[{"namespace_selector":[{}]}]}]}`, "every port from namespaces labelled map[]"},
		{`{"ingress":[{"ports":[{"port":"9480","protocol":"TCP"}],"from":[{"ip_block":[{"cidr":"0.0.0.0/0"}]}]}]}`, "TCP/9480 from cidr 0.0.0.0/0"},
	} {
		var spec map[string]any
		if err := json.Unmarshal([]byte(tc.spec), &spec); err != nil {
			t.Fatal(err)
		}
		if got := admitted(spec); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("admitted(%s) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

// deployment evaluates, for the given inputs, what a rollout depends on:
// replicas, the update strategy, the termination grace period, the probes
// and the PodDisruptionBudget. The server-config module's outputs are its
// own locals, evaluated statically as well.
type rollout struct {
	replicas, grace, drain  int
	maxUnavailable, surge   string
	readinessPath           string
	pdb                     bool
	pdbMinAvailable         string
	pdbSelectsServer        bool
	readinessFailureSeconds int
	probeTimeouts           []int // readiness, liveness
}

func kubernetesRollout(t *testing.T, vars map[string]cty.Value) rollout {
	t.Helper()
	cfg := loadModule(t, serverConfigDir)
	cfgVars := map[string]cty.Value{}
	if d, ok := vars["drain_timeout"]; ok {
		cfgVars["drain_timeout"] = d
	}
	cev := newEvaluator(t, cfg, cfgVars, nil)
	locals := cev.ctx.Variables["local"]
	if !locals.Type().HasAttribute("drain_seconds") {
		t.Fatal("server-config's local.drain_seconds does not evaluate statically")
	}
	drain := locals.GetAttr("drain_seconds")
	outs := map[string]cty.Value{}
	for name := range cfg.named("output") {
		outs[name] = ref("module.cfg." + name)
	}
	outs["drain_timeout_seconds"] = drain
	m := loadModule(t, kubernetesDir)
	ev := newEvaluator(t, m, vars, map[string]cty.Value{"module": cty.ObjectVal(map[string]cty.Value{"config": cty.ObjectVal(outs)})})
	num := func(expr hclsyntax.Expression) int {
		v := ev.eval(t, expr)
		n, _ := v.AsBigFloat().Int64()
		return int(n)
	}
	dep := m.one(t, "resource", "kubernetes_deployment_v1", "this")
	spec := path(t, dep, "spec")
	ru := path(t, spec, "strategy", "rolling_update")
	pod := path(t, spec, "template", "spec")
	probe := path(t, pod, "container", "readiness_probe")
	r := rollout{
		replicas:       num(spec.Body.Attributes["replicas"].Expr),
		grace:          num(pod.Body.Attributes["termination_grace_period_seconds"].Expr),
		drain:          num(&hclsyntax.LiteralValueExpr{Val: drain}),
		maxUnavailable: ev.eval(t, ru.Body.Attributes["max_unavailable"].Expr).AsString(),
		surge:          ev.eval(t, ru.Body.Attributes["max_surge"].Expr).AsString(),
		readinessPath:  ev.eval(t, path(t, probe, "http_get").Body.Attributes["path"].Expr).AsString(),
		readinessFailureSeconds: num(probe.Body.Attributes["period_seconds"].Expr) *
			num(probe.Body.Attributes["failure_threshold"].Expr),
	}
	for _, p := range []*hclsyntax.Block{probe, path(t, pod, "container", "liveness_probe")} {
		timeout := 1 // Kubernetes' default
		if a, ok := p.Body.Attributes["timeout_seconds"]; ok {
			timeout = num(a.Expr)
		}
		r.probeTimeouts = append(r.probeTimeouts, timeout)
	}
	pdb := m.one(t, "resource", "kubernetes_pod_disruption_budget_v1", "this")
	if r.pdb = num(pdb.Body.Attributes["count"].Expr) == 1; r.pdb {
		ps := path(t, pdb, "spec")
		r.pdbMinAvailable = ev.eval(t, ps.Body.Attributes["min_available"].Expr).AsString()
		sel := ev.eval(t, path(t, ps, "selector").Body.Attributes["match_labels"].Expr)
		podSel := ev.eval(t, path(t, spec, "selector").Body.Attributes["match_labels"].Expr)
		r.pdbSelectsServer = sel.Equals(podSel).True()
	}
	return r
}

// TestKubernetesRollout: two replicas by default, a rollout that starts a
// new pod before it stops an old one, a PodDisruptionBudget that keeps one
// pod through voluntary disruptions (none for a single replica, where it
// would block node drains), and a termination grace period that covers the
// server's drain (SIGTERM, drain_timeout for running sessions, then 57P01)
// with room to exit.
func TestKubernetesRollout(t *testing.T) {
	regions := cty.TupleVal([]cty.Value{cty.StringVal("eu-west-1")})
	for _, tc := range []struct {
		name     string
		vars     map[string]cty.Value
		replicas int
		drain    int
	}{
		{"default", map[string]cty.Value{"regions": regions}, 2, 30},
		{"three replicas, long drain", map[string]cty.Value{"regions": regions, "replicas": cty.NumberIntVal(3), "drain_timeout": cty.StringVal("2m")}, 3, 120},
		{"one replica", map[string]cty.Value{"regions": regions, "replicas": cty.NumberIntVal(1), "drain_timeout": cty.StringVal("1500ms")}, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kubernetesRollout(t, tc.vars)
			if r.replicas != tc.replicas || r.drain != tc.drain {
				t.Fatalf("replicas %d, drain %d s; want %d, %d", r.replicas, r.drain, tc.replicas, tc.drain)
			}
			if r.maxUnavailable != "0" || r.surge != "1" {
				t.Errorf("rolling update max_unavailable %s, max_surge %s; want 0 and 1 (a new pod is ready before an old one stops)", r.maxUnavailable, r.surge)
			}
			// After the drain, a session still reading its result has
			// relay.StopLimit to take it and the 57P01; then the server exits.
			if stopLimit := int(relay.StopLimit.Seconds()); r.grace < r.drain+stopLimit+1 {
				t.Errorf("termination grace %d s for a %d s drain: the kubelet would SIGKILL the server before a slow reader gets its 57P01 (up to %d s after the drain) and the server exits", r.grace, r.drain, stopLimit)
			}
			for _, timeout := range r.probeTimeouts {
				if headerWait := int(server.DefaultAdminReadHeaderTimeout.Seconds()); timeout <= headerWait {
					t.Errorf("probe timeout %d s: clients holding every admin connection for the listener's %d s header timeout would fail the probes and restart the pod", timeout, headerWait)
				}
			}
			if r.readinessPath != "/readyz" || r.readinessFailureSeconds > r.grace {
				t.Errorf("readiness probe %s fails after %d s; want /readyz (503 while draining), well within the %d s grace", r.readinessPath, r.readinessFailureSeconds, r.grace)
			}
			switch {
			case tc.replicas > 1 && (!r.pdb || r.pdbMinAvailable != "1" || !r.pdbSelectsServer):
				t.Errorf("with %d replicas the PodDisruptionBudget is %+v; want min_available 1 over the server's pods", tc.replicas, r)
			case tc.replicas == 1 && r.pdb:
				t.Error("a PodDisruptionBudget with min_available 1 over a single replica blocks every node drain")
			}
		})
	}
}
