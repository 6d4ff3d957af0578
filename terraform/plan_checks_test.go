package terraform_test

// Checks on a saved plan (`terraform show -json`), and their negative
// controls: each mutation of a real plan must be reported.

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// rc is one planned managed resource.
type rc struct {
	module, addr, typ, name string
	after, unknown          map[string]any
	config                  map[string]any // its block in the configuration
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }
func str(v any) string         { s, _ := v.(string); return s }

// strs reads a JSON string-or-list (IAM's Action, Resource, condition values).
func strs(v any) []string {
	if s, ok := v.(string); ok {
		return []string{s}
	}
	var out []string
	for _, e := range list(v) {
		out = append(out, str(e))
	}
	return out
}

// configModules maps module addresses ("" for the root, "module.x") to
// their configuration blocks.
func configModules(plan map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	var walk func(addr string, m map[string]any)
	walk = func(addr string, m map[string]any) {
		out[addr] = m
		for name, call := range obj(m["module_calls"]) {
			child := "module." + name
			if addr != "" {
				child = addr + "." + child
			}
			walk(child, obj(obj(call)["module"]))
		}
	}
	walk("", obj(obj(plan["configuration"])["root_module"]))
	return out
}

func resourceChanges(plan map[string]any) []rc {
	mods := configModules(plan)
	var out []rc
	for _, e := range list(plan["resource_changes"]) {
		r := obj(e)
		if str(r["mode"]) != "managed" {
			continue
		}
		c := obj(r["change"])
		x := rc{module: str(r["module_address"]), addr: str(r["address"]), typ: str(r["type"]), name: str(r["name"]),
			after: obj(c["after"]), unknown: obj(c["after_unknown"])}
		for _, cr := range list(mods[x.module]["resources"]) {
			if str(obj(cr)["address"]) == x.typ+"."+x.name && str(obj(cr)["mode"]) == "managed" {
				x.config = obj(cr)
			}
		}
		out = append(out, x)
	}
	return out
}

// refs returns the references of an attribute's expression, reduced to
// "type.name" of resources ("aws_security_group.this.id" -> "aws_security_group.this").
func refs(expr any) []string {
	var out []string
	for _, r := range strs(obj(expr)["references"]) {
		if p := strings.Split(r, "."); len(p) >= 2 && !slices.Contains([]string{"var", "local", "module", "data", "each", "count"}, p[0]) {
			out = append(out, p[0]+"."+p[1])
		}
	}
	return out
}

func expr(r rc, path ...string) any {
	var v any = r.config["expressions"]
	for _, p := range path {
		if l := list(v); l != nil {
			if len(l) == 0 {
				return nil
			}
			v = l[0]
		}
		v = obj(v)[p]
	}
	return v
}

// first returns the first element of a nested block list in after.
func first(m map[string]any, key string) map[string]any {
	l := list(m[key])
	if len(l) == 0 {
		return nil
	}
	return obj(l[0])
}

func checkPlan(plan map[string]any, w planWant) []string {
	rcs := resourceChanges(plan)
	return slices.Concat(checkLaunch(rcs, w), checkGroup(plan, rcs, w), checkNoIngress(rcs), checkRole(rcs, w), checkEndpoints(rcs, w),
		checkDocument(rcs, w), checkLogs(rcs, w), checkDeveloperOutput(plan, w))
}

// checkLogs: with cloudwatch_logs, one log group with the retention and key
// asked for; without, none.
func checkLogs(rcs []rc, w planWant) []string {
	var groups []rc
	for _, r := range rcs {
		if r.typ == "aws_cloudwatch_log_group" {
			groups = append(groups, r)
		}
	}
	if w.logs == nil {
		if len(groups) > 0 {
			return []string{"a log group is planned without cloudwatch_logs"}
		}
		return nil
	}
	if len(groups) != 1 {
		return []string{fmt.Sprintf("want one log group, found %d", len(groups))}
	}
	g := groups[0].after
	var problems []string
	if str(g["name"]) != w.logs.group || fmt.Sprint(g["retention_in_days"]) != fmt.Sprint(w.logs.retention) || str(g["kms_key_id"]) != w.logs.kms {
		problems = append(problems, fmt.Sprintf("log group %v retention %v kms %v; want %s, %d days, key %q", g["name"], g["retention_in_days"], g["kms_key_id"], w.logs.group, w.logs.retention, w.logs.kms))
	}
	return problems
}

func (w planWant) developerRegions() []string {
	if len(w.devRegions) > 0 {
		return w.devRegions
	}
	return []string{w.region}
}

// checkDocument: the module's Session document forwards to the server port
// and to nothing a session could choose.
func checkDocument(rcs []rc, w planWant) []string {
	var problems []string
	n := 0
	for _, r := range rcs {
		if r.typ != "aws_ssm_document" {
			continue
		}
		n++
		var doc struct {
			SessionType string `json:"sessionType"`
			Parameters  map[string]any
			Properties  map[string]string
		}
		if err := json.Unmarshal([]byte(str(r.after["content"])), &doc); err != nil {
			problems = append(problems, r.addr+": content is not known JSON: "+err.Error())
			continue
		}
		if str(r.after["document_type"]) != "Session" || doc.SessionType != "Port" || doc.Properties["type"] != "LocalPortForwarding" {
			problems = append(problems, fmt.Sprintf("%s: not a local port-forwarding Session document: %+v", r.addr, doc))
		}
		if doc.Properties["portNumber"] != w.port {
			problems = append(problems, fmt.Sprintf("%s: forwards to port %q, want only the server port %s", r.addr, doc.Properties["portNumber"], w.port))
		}
		for name := range doc.Parameters {
			if name != "localPortNumber" {
				problems = append(problems, fmt.Sprintf("%s: the session may set parameter %s", r.addr, name))
			}
		}
	}
	if n != 1 {
		problems = append(problems, fmt.Sprintf("want one port-forwarding Session document, found %d", n))
	}
	return problems
}

// checkLaunch: IMDSv2 only, no public IP, encrypted volumes; the user data
// checks the configured checksum and carries the server config for the
// expected region.
func checkLaunch(rcs []rc, w planWant) []string {
	var problems []string
	n := 0
	for _, r := range rcs {
		switch r.typ {
		case "aws_launch_template":
			n++
			md := first(r.after, "metadata_options")
			if str(md["http_tokens"]) != "required" || str(md["http_endpoint"]) != "enabled" {
				problems = append(problems, fmt.Sprintf("%s: metadata_options http_tokens=%v http_endpoint=%v, want required/enabled (IMDSv2 only)", r.addr, md["http_tokens"], md["http_endpoint"]))
			}
			nis := list(r.after["network_interfaces"])
			if len(nis) == 0 {
				problems = append(problems, r.addr+": no network_interfaces block, so no associate_public_ip_address=false")
			}
			for _, ni := range nis {
				if v := obj(ni)["associate_public_ip_address"]; v != "false" {
					problems = append(problems, fmt.Sprintf("%s: associate_public_ip_address=%v: the instance would get a public IP", r.addr, v))
				}
			}
			bds := list(r.after["block_device_mappings"])
			if len(bds) == 0 {
				problems = append(problems, r.addr+": no block_device_mappings, so the root volume's encryption is not set")
			}
			for _, bd := range bds {
				if ebs := first(obj(bd), "ebs"); str(ebs["encrypted"]) != "true" {
					problems = append(problems, fmt.Sprintf("%s: volume %v is not encrypted", r.addr, obj(bd)["device_name"]))
				}
			}
			problems = append(problems, checkUserData(r, w)...)
		case "aws_instance":
			n++
			if r.after["associate_public_ip_address"] != false {
				problems = append(problems, r.addr+": instance may get a public IP")
			}
			if md := first(r.after, "metadata_options"); str(md["http_tokens"]) != "required" {
				problems = append(problems, r.addr+": http_tokens is not required (IMDSv2 only)")
			}
		}
	}
	if n == 0 {
		problems = append(problems, "no launch template or instance planned")
	}
	return problems
}

var userDataFile = regexp.MustCompile(`echo '([A-Za-z0-9+/=]+)' \| base64 --decode > '([^']+)\.new'`)

func checkUserData(r rc, w planWant) []string {
	if w.unknownUser && r.unknown["user_data"] == true {
		return nil
	}
	script, err := decodeUserData(str(r.after["user_data"]))
	if err != nil || script == "" {
		return []string{fmt.Sprintf("%s: user_data is not known gzip+base64 at plan time: %v", r.addr, err)}
	}
	var problems []string
	if w.sha256 != "" && !strings.Contains(script, "'"+w.sha256+"  '") {
		problems = append(problems, r.addr+": user data does not check the binary's sha256 "+w.sha256)
	}
	m := userDataFile.FindStringSubmatch(script)
	if m == nil {
		return append(problems, r.addr+": user data writes no config file")
	}
	doc, _ := base64.StdEncoding.DecodeString(m[1])
	var cfg struct{ Region []string }
	if err := yaml.Unmarshal(doc, &cfg); err != nil || !slices.Equal(cfg.Region, []string{w.region}) {
		problems = append(problems, fmt.Sprintf("%s: server config discovers in regions %q, want [%s] (%v)", r.addr, cfg.Region, w.region, err))
	}
	return problems
}

// checkGroup: the Auto Scaling group runs w.desired instances in subnets of
// at least two availability zones, refreshes launch before terminate with
// a warm-up, and (unless w.noHooks) has the launch hook that waits for
// /readyz (ABANDON when it never answers) and a termination hook that
// outlasts the drain and the unit's stop timeout (drain + 15 s).
func checkGroup(plan map[string]any, rcs []rc, w planWant) []string {
	var problems []string
	var groups []rc
	subnetAZ := map[string]string{} // subnet id -> zone, from data sources
	var plannedAZs []string         // zones of subnets created in this plan
	for _, r := range rcs {
		switch r.typ {
		case "aws_autoscaling_group":
			groups = append(groups, r)
		case "aws_subnet":
			plannedAZs = append(plannedAZs, str(r.after["availability_zone"]))
		}
	}
	var walk func(m map[string]any)
	walk = func(m map[string]any) {
		for _, e := range list(m["resources"]) {
			if r := obj(e); str(r["mode"]) == "data" && str(r["type"]) == "aws_subnet" {
				v := obj(r["values"])
				subnetAZ[str(v["id"])] = str(v["availability_zone"])
			}
		}
		for _, c := range list(m["child_modules"]) {
			walk(obj(c))
		}
	}
	walk(obj(obj(obj(plan["prior_state"])["values"])["root_module"]))
	if len(groups) != 1 {
		return []string{fmt.Sprintf("want one Auto Scaling group, found %d", len(groups))}
	}
	g := groups[0]
	desired, _ := g.after["desired_capacity"].(float64)
	if int(desired) != w.desired || desired < 2 {
		problems = append(problems, fmt.Sprintf("%s: desired_capacity %v, want %d (two or more)", g.addr, g.after["desired_capacity"], w.desired))
	}
	azs := plannedAZs
	if g.unknown["vpc_zone_identifier"] != true {
		azs = nil
		for _, id := range strs(g.after["vpc_zone_identifier"]) {
			azs = append(azs, subnetAZ[id])
		}
	}
	slices.Sort(azs)
	if azs = slices.Compact(azs); len(azs) < 2 || slices.Contains(azs, "") {
		problems = append(problems, fmt.Sprintf("%s: the group's subnets are in zones %q, want two or more known zones", g.addr, azs))
	}
	refresh := first(g.after, "instance_refresh")
	prefs := first(refresh, "preferences")
	if str(refresh["strategy"]) != "Rolling" || fmt.Sprint(prefs["min_healthy_percentage"]) != "100" || fmt.Sprint(prefs["max_healthy_percentage"]) != "200" {
		problems = append(problems, fmt.Sprintf("%s: instance_refresh %v, want Rolling with min 100%% / max 200%% healthy (launch before terminate)", g.addr, refresh))
	}
	if wu := fmt.Sprint(prefs["instance_warmup"]); wu == "" || wu == "<nil>" || wu == "0" {
		problems = append(problems, fmt.Sprintf("%s: instance_refresh has no instance_warmup", g.addr))
	}
	hooks := map[string]map[string]any{}
	for _, h := range list(g.after["initial_lifecycle_hook"]) {
		hooks[str(obj(h)["lifecycle_transition"])] = obj(h)
	}
	if w.noHooks {
		if len(hooks) > 0 {
			problems = append(problems, fmt.Sprintf("%s: lifecycle hooks %v with lifecycle_hooks off", g.addr, hooks))
		}
		return problems
	}
	launch, term := hooks["autoscaling:EC2_INSTANCE_LAUNCHING"], hooks["autoscaling:EC2_INSTANCE_TERMINATING"]
	if launch == nil || str(launch["name"]) != "rdsproxy-ready" || str(launch["default_result"]) != "ABANDON" {
		problems = append(problems, fmt.Sprintf("%s: launch hook %v, want rdsproxy-ready with default_result ABANDON (an instance whose /readyz never answers never enters service)", g.addr, launch))
	}
	if hb, _ := term["heartbeat_timeout"].(float64); term == nil || str(term["name"]) != "rdsproxy-drain" || str(term["default_result"]) != "CONTINUE" || int(hb) < w.drainSeconds+15 {
		problems = append(problems, fmt.Sprintf("%s: termination hook %v, want rdsproxy-drain, CONTINUE, a heartbeat of at least drain_timeout + the unit's 15 s stop margin (%d s)", g.addr, term, w.drainSeconds+15))
	}
	return problems
}

// decodeUserData reverses the module's base64gzip.
func decodeUserData(s string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(zr)
	return string(b), err
}

// encodeUserData is the module's base64gzip: what EC2 receives.
func encodeUserData(s string) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(s))
	zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// checkNoIngress: the security groups of the server's network interfaces
// have no ingress, neither inline nor as separate rules.
func checkNoIngress(rcs []rc) []string {
	var problems []string
	server := map[string]bool{} // module + "/" + sg
	for _, r := range rcs {
		if r.typ == "aws_launch_template" {
			for _, sg := range refs(expr(r, "network_interfaces", "security_groups")) {
				server[r.module+"/"+sg] = true
			}
		}
	}
	if len(server) == 0 {
		return []string{"cannot find the server's security group in the launch template's configuration"}
	}
	for _, r := range rcs {
		switch r.typ {
		case "aws_security_group":
			if server[r.module+"/"+r.typ+"."+r.name] && (r.config["expressions"] == nil || obj(r.config["expressions"])["ingress"] != nil) {
				problems = append(problems, r.addr+": the server's security group has inline ingress (or no configuration to tell)")
			}
		case "aws_vpc_security_group_ingress_rule", "aws_security_group_rule":
			if r.typ == "aws_security_group_rule" && str(r.after["type"]) != "ingress" {
				continue
			}
			for _, sg := range refs(expr(r, "security_group_id")) {
				if server[r.module+"/"+sg] {
					problems = append(problems, r.addr+": ingress rule on the server's security group")
				}
			}
		}
	}
	return problems
}

var discoveryWant = []string{"rds:DescribeDBClusters", "rds:DescribeDBInstances"}

// checkRole: the role of the instance profile has exactly the SSM core
// managed policy and inline policies granting the two discovery actions
// (and s3:GetObject on the one binary object for S3 delivery).
func checkRole(rcs []rc, w planWant) []string {
	var problems []string
	roles := map[string]bool{}
	for _, r := range rcs {
		if r.typ == "aws_iam_instance_profile" {
			for _, role := range refs(expr(r, "role")) {
				roles[r.module+"/"+role] = true
			}
		}
		if slices.Contains([]string{"aws_iam_policy_attachment", "aws_iam_role_policies_exclusive", "aws_iam_role_policy_attachments_exclusive"}, r.typ) {
			problems = append(problems, r.addr+": unexpected "+r.typ)
		}
	}
	if len(roles) != 1 {
		return append(problems, fmt.Sprintf("want one instance profile role, found %d", len(roles)))
	}
	onRole := func(r rc) bool {
		for _, role := range refs(expr(r, "role")) {
			if roles[r.module+"/"+role] {
				return true
			}
		}
		return false
	}
	var attached, actions []string
	unknown := 0
	for _, r := range rcs {
		switch {
		case r.typ == "aws_iam_role" && roles[r.module+"/"+r.typ+"."+r.name]:
			if e := obj(r.config["expressions"]); e["inline_policy"] != nil || e["managed_policy_arns"] != nil {
				problems = append(problems, r.addr+": role declares inline_policy or managed_policy_arns")
			}
		case r.typ == "aws_iam_role_policy_attachment" && onRole(r):
			attached = append(attached, str(r.after["policy_arn"]))
		case r.typ == "aws_iam_role_policy" && onRole(r):
			if r.unknown["policy"] == true {
				unknown++
				continue
			}
			acts, p := policyActions(r.addr, str(r.after["policy"]), w)
			actions = append(actions, acts...)
			problems = append(problems, p...)
		}
	}
	if !slices.Equal(attached, []string{"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}) {
		problems = append(problems, fmt.Sprintf("role policy attachments %q; want only AmazonSSMManagedInstanceCore", attached))
	}
	want := slices.Clone(discoveryWant)
	if w.binaryObject != "" {
		want = append(want, "s3:GetObject")
	}
	if !w.noHealth {
		want = append(want, "autoscaling:SetInstanceHealth")
	}
	if !w.noHooks {
		want = append(want, "autoscaling:CompleteLifecycleAction", "autoscaling:DescribeAutoScalingInstances")
	}
	if w.logs != nil {
		want = append(want, "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents")
	}
	sort.Strings(want)
	sort.Strings(actions)
	if !slices.Equal(actions, want) {
		problems = append(problems, fmt.Sprintf("the role grants %q; want exactly %q", actions, want))
	}
	if unknown != w.unknownPolicy {
		problems = append(problems, fmt.Sprintf("%d role policies unknown at plan time, want %d", unknown, w.unknownPolicy))
	}
	return problems
}

// statement is one IAM policy statement, normalised.
type statement struct {
	Effect    string
	Action    any
	NotAction any
	Resource  any
	Condition map[string]map[string]any
}

func parsePolicy(doc string) ([]statement, error) {
	var p struct{ Statement []statement }
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return nil, err
	}
	return p.Statement, nil
}

func policyActions(where, doc string, w planWant) ([]string, []string) {
	sts, err := parsePolicy(doc)
	if err != nil {
		return nil, []string{where + ": policy is not JSON: " + err.Error()}
	}
	group := fmt.Sprintf("arn:aws:autoscaling:%s:123456789012:autoScalingGroup:*:autoScalingGroupName/%s-*", w.region, w.name)
	var actions, problems []string
	for _, st := range sts {
		if st.Effect != "Allow" || st.NotAction != nil {
			problems = append(problems, fmt.Sprintf("%s: statement with Effect %s or NotAction", where, st.Effect))
		}
		for _, a := range strs(st.Action) {
			actions = append(actions, a)
			switch a {
			case "s3:GetObject":
				if !slices.Equal(strs(st.Resource), []string{w.binaryObject}) {
					problems = append(problems, fmt.Sprintf("%s: s3:GetObject on %q, want only %q", where, strs(st.Resource), w.binaryObject))
				}
			case "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents":
				group := ""
				if w.logs != nil {
					group = fmt.Sprintf("arn:aws:logs:%s:123456789012:log-group:%s:*", w.region, w.logs.group)
				}
				if !slices.Equal(strs(st.Resource), []string{group}) {
					problems = append(problems, fmt.Sprintf("%s: %s on %q, want only the server's log group %s", where, a, strs(st.Resource), group))
				}
			case "autoscaling:SetInstanceHealth", "autoscaling:CompleteLifecycleAction":
				if !slices.Equal(strs(st.Resource), []string{group}) ||
					!slices.Equal(strs(st.Condition["StringEquals"]["autoscaling:ResourceTag/rdsproxy:server"]), []string{w.name}) {
					problems = append(problems, fmt.Sprintf("%s: %s on %q %v, want only this server's group %s tagged rdsproxy:server=%s", where, a, strs(st.Resource), st.Condition, group, w.name))
				}
			case "autoscaling:DescribeAutoScalingInstances": // no resource-level permissions
				if len(strs(st.Action)) != 1 {
					problems = append(problems, fmt.Sprintf("%s: %q share the statement that DescribeAutoScalingInstances needs on *", where, strs(st.Action)))
				}
			}
		}
	}
	return actions, problems
}

// checkEndpoints: exactly the expected interface endpoints, private DNS on.
func checkEndpoints(rcs []rc, w planWant) []string {
	var got []string
	var problems []string
	for _, r := range rcs {
		if r.typ == "aws_vpc_endpoint" && str(r.after["vpc_endpoint_type"]) == "Interface" {
			got = append(got, str(r.after["service_name"]))
			if r.after["private_dns_enabled"] != true {
				problems = append(problems, r.addr+": private DNS is off, so the SDK would not use the endpoint")
			}
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, w.endpoints) {
		problems = append(problems, fmt.Sprintf("interface endpoints %q, want %q", got, w.endpoints))
	}
	return problems
}

var numberWords = []string{"no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}

// checkExampleReadme: an example's README names every interface endpoint
// its plan creates, as `ssm`, and says how many ("six interface endpoints"):
// they are what the example bills per hour and zone.
func checkExampleReadme(readme string, endpoints []string) []string {
	readme = strings.Join(strings.Fields(readme), " ")
	var problems []string
	for _, e := range endpoints {
		short := e[strings.LastIndex(e, ".")+1:]
		if !strings.Contains(readme, "`"+short+"`") {
			problems = append(problems, fmt.Sprintf("the example's README does not name the interface endpoint `%s`, which the plan creates", short))
		}
	}
	if n := len(endpoints); n < len(numberWords) && !strings.Contains(readme, numberWords[n]+" interface endpoints") {
		problems = append(problems, fmt.Sprintf("the example's README does not say %q (the plan creates %d)", numberWords[n]+" interface endpoints", n))
	}
	return problems
}

// developerActions are all the developer policy may grant.
var developerActions = []string{"ec2:DescribeInstances", "rds-db:connect", "ssm:DescribeInstanceInformation", "ssm:ResumeSession", "ssm:StartSession", "ssm:TerminateSession", "ssmmessages:OpenDataChannel"}

// checkDeveloperOutput: StartSession only on the tagged instances and the
// port-forwarding document, with the document check on every such
// statement; session actions only on the caller's own sessions.
func checkDeveloperOutput(plan map[string]any, w planWant) []string {
	if !w.developer {
		return nil
	}
	out := obj(obj(plan["output_changes"])["developer"])
	sts, err := parsePolicy(str(out["after"]))
	if err != nil {
		return []string{"developer policy output is not known JSON: " + err.Error()}
	}
	var problems []string
	for _, st := range sts {
		res := strings.Join(strs(st.Resource), " ")
		for _, a := range strs(st.Action) {
			switch {
			case !slices.Contains(developerActions, a):
				problems = append(problems, "developer policy grants "+a)
			case a == "ssm:StartSession" && !slices.Equal(strs(st.Condition["BoolIfExists"]["ssm:SessionDocumentAccessCheck"]), []string{"true"}):
				problems = append(problems, "a StartSession statement lacks ssm:SessionDocumentAccessCheck=true")
			case a == "ssm:StartSession" && strings.Contains(res, ":instance/") &&
				!slices.Equal(strs(st.Condition["StringEquals"]["ssm:resourceTag/rdsproxy:server"]), []string{w.name}):
				problems = append(problems, "StartSession on instances is not limited to the tag rdsproxy:server="+w.name)
			case a == "ssm:StartSession" && strings.Contains(res, ":document/"):
				for _, d := range strs(st.Resource) {
					if !slices.Contains(w.documents, d) {
						problems = append(problems, fmt.Sprintf("StartSession allows document %s; want only %q", d, w.documents))
					}
				}
			case (a == "ssm:TerminateSession" || a == "ssm:ResumeSession" || a == "ssmmessages:OpenDataChannel") &&
				!strings.Contains(res, "${aws:username}") && !strings.Contains(res, "${aws:userid}") &&
				len(strs(st.Condition["StringLike"]["ssm:resourceTag/aws:ssmmessages:session-id"])) == 0:
				problems = append(problems, a+" is not limited to the caller's own sessions")
			}
			for _, r := range strs(st.Resource) {
				if p := strings.Split(r, ":"); len(p) > 3 && p[3] != "" && !slices.Contains(w.developerRegions(), p[3]) {
					problems = append(problems, fmt.Sprintf("developer policy names region %s, want only %q", p[3], w.developerRegions()))
				}
			}
		}
	}
	return problems
}

// checkMutationsCaught: each check reports a mutated copy of a real plan.
func checkMutationsCaught(t *testing.T, plan map[string]any, w planWant) {
	t.Helper()
	if p := checkPlan(plan, w); len(p) > 0 {
		return // already reported
	}
	find := func(p map[string]any, typ, name string) map[string]any {
		for _, e := range list(p["resource_changes"]) {
			if str(obj(e)["type"]) == typ && (name == "" || str(obj(e)["name"]) == name) {
				return obj(e)
			}
		}
		t.Fatalf("mutation: no %s.%s in the plan", typ, name)
		return nil
	}
	after := func(r map[string]any) map[string]any { return obj(obj(r["change"])["after"]) }
	module := func(p map[string]any) map[string]any { return configModules(p)["module.rdsproxy"] }
	setDeveloper := func(p map[string]any, f func(*[]statement)) {
		out := obj(obj(p["output_changes"])["developer"])
		sts, _ := parsePolicy(str(out["after"]))
		f(&sts)
		b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": sts})
		out["after"] = string(b)
	}
	mutations := []struct {
		name, want string
		mutate     func(map[string]any)
	}{
		{"imds optional", "IMDSv2", func(p map[string]any) {
			first(after(find(p, "aws_launch_template", "")), "metadata_options")["http_tokens"] = "optional"
		}},
		{"public ip", "public IP", func(p map[string]any) {
			first(after(find(p, "aws_launch_template", "")), "network_interfaces")["associate_public_ip_address"] = "true"
		}},
		{"unencrypted", "not encrypted", func(p map[string]any) {
			first(first(after(find(p, "aws_launch_template", "")), "block_device_mappings"), "ebs")["encrypted"] = "false"
		}},
		{"wrong region", "region", func(p map[string]any) {
			lt := after(find(p, "aws_launch_template", ""))
			ud, _ := decodeUserData(str(lt["user_data"]))
			s := userDataFile.ReplaceAllStringFunc(ud, func(m string) string {
				sub := userDataFile.FindStringSubmatch(m)
				y, _ := base64.StdEncoding.DecodeString(sub[1])
				y = []byte(strings.ReplaceAll(string(y), w.region, "us-east-2"))
				return strings.Replace(m, sub[1], base64.StdEncoding.EncodeToString(y), 1)
			})
			lt["user_data"] = encodeUserData(s)
		}},
		{"ingress rule", "ingress rule on the server", func(p map[string]any) {
			m := module(p)
			m["resources"] = append(list(m["resources"]), map[string]any{"address": "aws_vpc_security_group_ingress_rule.ssh", "mode": "managed",
				"expressions": map[string]any{"security_group_id": map[string]any{"references": []any{"aws_security_group.this.id", "aws_security_group.this"}}}})
			p["resource_changes"] = append(list(p["resource_changes"]), map[string]any{"address": "module.rdsproxy.aws_vpc_security_group_ingress_rule.ssh",
				"module_address": "module.rdsproxy", "mode": "managed", "type": "aws_vpc_security_group_ingress_rule", "name": "ssh",
				"change": map[string]any{"after": map[string]any{"from_port": 22.0}}})
		}},
		{"extra action", "the role grants", func(p map[string]any) {
			a := after(find(p, "aws_iam_role_policy", "discovery"))
			a["policy"] = strings.Replace(str(a["policy"]), `"rds:DescribeDBClusters"`, `"rds:DescribeDBClusters","rds:ModifyDBInstance"`, 1)
		}},
		{"log group without cloudwatch_logs", "a log group is planned", func(p map[string]any) {
			p["resource_changes"] = append(list(p["resource_changes"]), map[string]any{"address": "aws_cloudwatch_log_group.other",
				"mode": "managed", "type": "aws_cloudwatch_log_group", "name": "other", "change": map[string]any{"after": map[string]any{"name": "x"}}})
		}},
		{"health on any group", "SetInstanceHealth on", func(p map[string]any) {
			a := after(find(p, "aws_iam_role_policy", "health"))
			a["policy"] = regexp.MustCompile(`arn:aws:autoscaling:[^"]+`).ReplaceAllString(str(a["policy"]), "*")
		}},
		{"admin attachment", "AmazonSSMManagedInstanceCore", func(p map[string]any) {
			after(find(p, "aws_iam_role_policy_attachment", ""))["policy_arn"] = "arn:aws:iam::aws:policy/AdministratorAccess"
		}},
		{"developer extra action", "grants ssm:SendCommand", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) { (*s)[0].Action = []string{"ssm:StartSession", "ssm:SendCommand"} })
		}},
		{"developer without document check", "SessionDocumentAccessCheck", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) {
				for i := range *s {
					delete((*s)[i].Condition, "BoolIfExists")
				}
			})
		}},
		{"developer shell document", "allows document", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) {
				for i, st := range *s {
					if strings.Contains(fmt.Sprint(st.Resource), ":document/") {
						(*s)[i].Resource = "arn:aws:ssm:" + w.region + "::document/SSM-SessionManagerRunShell"
					}
				}
			})
		}},
		{"developer generic port forwarding", "allows document", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) {
				for i, st := range *s {
					if strings.Contains(fmt.Sprint(st.Resource), ":document/") {
						(*s)[i].Resource = "arn:aws:ssm:" + w.region + "::document/AWS-StartPortForwardingSession"
					}
				}
			})
		}},
		{"developer other region", "names region", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) { (*s)[0].Resource = "arn:aws:ec2:ap-south-1:123456789012:instance/*" })
		}},
		{"document any port", "the session may set parameter portNumber", func(p map[string]any) {
			a := after(find(p, "aws_ssm_document", "port_forward"))
			a["content"] = strings.Replace(str(a["content"]), `"parameters":{`, `"parameters":{"portNumber":{"type":"String"},`, 1)
		}},
		{"document other port", "forwards to port", func(p map[string]any) {
			a := after(find(p, "aws_ssm_document", "port_forward"))
			a["content"] = strings.Replace(str(a["content"]), `"portNumber":"`+w.port+`"`, `"portNumber":"22"`, 1)
		}},
		{"one instance", "desired_capacity", func(p map[string]any) {
			after(find(p, "aws_autoscaling_group", ""))["desired_capacity"] = 1.0
		}},
		{"one zone", "two or more known zones", func(p map[string]any) {
			g := after(find(p, "aws_autoscaling_group", ""))
			g["vpc_zone_identifier"] = strs(g["vpc_zone_identifier"])[:1]
		}},
		{"terminate before launch", "launch before terminate", func(p map[string]any) {
			first(first(after(find(p, "aws_autoscaling_group", "")), "instance_refresh"), "preferences")["min_healthy_percentage"] = 90.0
		}},
		{"short drain hook", "termination hook", func(p map[string]any) {
			for _, h := range list(after(find(p, "aws_autoscaling_group", ""))["initial_lifecycle_hook"]) {
				if str(obj(h)["name"]) == "rdsproxy-drain" {
					obj(h)["heartbeat_timeout"] = 30.0
				}
			}
		}},
		{"launch hook continues", "launch hook", func(p map[string]any) {
			for _, h := range list(after(find(p, "aws_autoscaling_group", ""))["initial_lifecycle_hook"]) {
				if str(obj(h)["name"]) == "rdsproxy-ready" {
					obj(h)["default_result"] = "CONTINUE"
				}
			}
		}},
		{"lifecycle on any group", "CompleteLifecycleAction on", func(p map[string]any) {
			a := after(find(p, "aws_iam_role_policy", "lifecycle"))
			a["policy"] = regexp.MustCompile(`arn:aws:autoscaling:[^"]+`).ReplaceAllString(str(a["policy"]), "*")
		}},
		{"developer any session", "own sessions", func(p map[string]any) {
			setDeveloper(p, func(s *[]statement) {
				*s = append(*s, statement{Effect: "Allow", Action: "ssm:TerminateSession", Resource: "arn:aws:ssm:" + w.region + ":123456789012:session/*"})
			})
		}},
	}
	for _, m := range mutations {
		t.Run("caught: "+m.name, func(t *testing.T) {
			var p map[string]any
			b, _ := json.Marshal(plan)
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			m.mutate(p)
			problems := checkPlan(p, w)
			if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, m.want) }) {
				t.Fatalf("mutation %q not reported (want %q); problems: %q", m.name, m.want, problems)
			}
		})
	}
}
