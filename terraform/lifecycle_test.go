package terraform_test

// The Auto Scaling lifecycle hooks (modules/aws-server, lifecycle_hooks): the
// script and the drain unit are taken from the rendered user data and run
// for real against a fake /readyz, a fake IMDSv2 (target lifecycle state
// included) and fake aws and systemctl commands that record their
// arguments.

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

const lifecycleGroup = "orders-20261202081500000000000001"

// fakeIMDS answers IMDSv2 only: a token, the instance id and the target
// lifecycle state, which the test sets.
func fakeIMDS(t *testing.T, state *atomic.Value, polled chan<- struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authed := r.Header.Get("X-aws-ec2-metadata-token") == "imds-token"
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "":
			w.Write([]byte("imds-token"))
		case r.Method == http.MethodGet && authed && r.URL.Path == "/latest/meta-data/instance-id":
			w.Write([]byte("i-0123456789abcdef0"))
		case r.Method == http.MethodGet && authed && r.URL.Path == "/latest/meta-data/autoscaling/target-lifecycle-state":
			select {
			case polled <- struct{}{}:
			default:
			}
			w.Write([]byte(state.Load().(string)))
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// fakeCommands puts recording aws and systemctl first on PATH; aws answers
// describe-auto-scaling-instances with the group's name.
func fakeCommands(t *testing.T, dir string) (env []string, calls string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	calls = filepath.Join(dir, "calls")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "aws"), "#!/bin/sh\necho \"aws $*\" >> '"+calls+"'\n"+
		"case \"$2\" in describe-auto-scaling-instances) echo '"+lifecycleGroup+"';; esac\n")
	writeFile(t, filepath.Join(bin, "systemctl"), "#!/bin/sh\necho \"systemctl $*\" >> '"+calls+"'\n")
	for _, f := range []string{"aws", "systemctl"} {
		if err := os.Chmod(filepath.Join(bin, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "RDSPROXY_LIFECYCLE_POLL_SECONDS=0.1"), calls
}

func callLines(t *testing.T, calls string) []string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestLifecycleHooks(t *testing.T) {
	terraformBin(t)
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("NOTICE: %s is not installed; the lifecycle hooks were NOT run", tool)
		}
	}
	// /readyz answers 503 twice, then 200.
	var readyz atomic.Int32
	admin := fakeReadyz(t, func() bool { return readyz.Add(1) > 2 })
	var state atomic.Value
	state.Store("InService")
	polled := make(chan struct{}, 1)
	imds := fakeIMDS(t, &state, polled)

	r := renderAWSWith(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml", map[string]cty.Value{
		"admin_port": cty.NumberIntVal(int64(admin.Addr().(*net.TCPAddr).Port)),
	})
	files := installedFiles(t, r.userData)
	script, unit := files["/usr/local/libexec/rdsproxy-lifecycle"], files["/etc/systemd/system/rdsproxy-drain.service"]
	if script == "" || unit == "" {
		t.Fatalf("user data does not install the lifecycle hooks (files: %v)", keysOf(files))
	}
	enable, launch := strings.Index(r.userData, "systemctl enable --now rdsproxy-drain.service"), strings.Index(r.userData, "'/usr/local/libexec/rdsproxy-lifecycle' launch")
	if start := strings.Index(r.userData, "systemctl enable --now rdsproxy.service"); enable < 0 || launch < 0 || start > launch || strings.TrimSpace(r.userData[launch:]) != "'/usr/local/libexec/rdsproxy-lifecycle' launch" {
		t.Fatalf("user data must start rdsproxy and the drain watcher, then end with the launch hook")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "rdsproxy-lifecycle")
	writeFile(t, path, script)
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	env, calls := fakeCommands(t, dir)
	env = append(env, "RDSPROXY_LIFECYCLE_IMDS="+imds)
	describe := "aws autoscaling describe-auto-scaling-instances --region eu-west-1 --instance-ids i-0123456789abcdef0 --query AutoScalingInstances[0].AutoScalingGroupName --output text"
	complete := func(hook, result string) string {
		return "aws autoscaling complete-lifecycle-action --region eu-west-1 --auto-scaling-group-name " + lifecycleGroup +
			" --lifecycle-hook-name " + hook + " --instance-id i-0123456789abcdef0 --lifecycle-action-result " + result
	}

	t.Run("launch waits for readyz", func(t *testing.T) {
		os.Remove(calls)
		if res := run(t, dir, env, path, "launch"); res.err != nil {
			t.Fatalf("launch: %v\n%s%s", res.err, res.stdout, res.stderr)
		}
		if n := readyz.Load(); n != 3 {
			t.Errorf("/readyz was asked %d times, want 3 (two unready, then ready)", n)
		}
		if got, want := callLines(t, calls), []string{describe, complete("rdsproxy-ready", "CONTINUE")}; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("launch gives up", func(t *testing.T) {
		os.Remove(calls)
		// The rendered script with its 600 s deadline cut to 1 s, /readyz gone.
		short := strings.Replace(script, "SECONDS + 600", "SECONDS + 1", 1)
		if short == script {
			t.Fatal("the script has no 600 s readiness deadline (lifecycle_hooks.ready_timeout_seconds)")
		}
		writeFile(t, path+"-short", short)
		os.Chmod(path+"-short", 0o755)
		admin.Close() // /readyz gone: new connections are refused
		if res := run(t, dir, env, path+"-short", "launch"); res.err == nil || !strings.Contains(res.stderr, "abandoning this instance") {
			t.Fatalf("launch without /readyz: err %v, stderr %q; want a failure that says it abandons", res.err, res.stderr)
		}
		if got := callLines(t, calls); len(got) != 2 || got[1] != complete("rdsproxy-ready", "ABANDON") {
			t.Errorf("calls %q, want the ready hook completed with ABANDON", got)
		}
	})

	t.Run("drain before termination", func(t *testing.T) {
		os.Remove(calls)
		done := make(chan result, 1)
		go func() { done <- run(t, dir, env, path, "drain") }()
		for range 3 { // watching, not acting, while in service
			select {
			case res := <-done:
				t.Fatalf("drain ended while the instance is in service: %v\n%s%s", res.err, res.stdout, res.stderr)
			case <-polled:
			}
		}
		if b, _ := os.ReadFile(calls); len(b) > 0 {
			t.Fatalf("the watcher acted while the instance is in service: %s", b)
		}
		state.Store("Terminated")
		res := <-done
		if res.err != nil {
			t.Fatalf("drain: %v\n%s%s", res.err, res.stdout, res.stderr)
		}
		want := []string{"systemctl stop rdsproxy.service", describe, complete("rdsproxy-drain", "CONTINUE")}
		if got := callLines(t, calls); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("calls:\n%s\nwant (the server stopped, i.e. drained, before the hook is completed):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("NOTICE: systemd-analyze not installed; the drain unit was NOT verified")
		return
	}
	units := t.TempDir()
	writeFile(t, filepath.Join(units, "rdsproxy-drain.service"), strings.Replace(unit, "ExecStart=/usr/local/libexec/rdsproxy-lifecycle", "ExecStart="+path, 1))
	res := run(t, units, os.Environ(), analyze, "verify", filepath.Join(units, "rdsproxy-drain.service"))
	if res.err != nil || strings.TrimSpace(res.stderr) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", res.err, res.stderr)
	}
}

// TestLifecycleHooksOff: disabled, nothing is installed.
func TestLifecycleHooksOff(t *testing.T) {
	terraformBin(t)
	r := renderAWSWith(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml", map[string]cty.Value{
		"lifecycle_hooks": cty.ObjectVal(map[string]cty.Value{"enabled": cty.False}),
	})
	if strings.Contains(r.userData, "rdsproxy-lifecycle") || strings.Contains(r.userData, "rdsproxy-drain") {
		t.Error("lifecycle_hooks.enabled=false still installs the lifecycle hooks")
	}
}
