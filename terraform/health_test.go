package terraform_test

// The readiness check that replaces a wedged server (modules/aws-server,
// readiness_replacement): the script, unit and timer are taken from the
// rendered user data and run for real against a fake /readyz, a fake
// IMDSv2 and a fake aws CLI that records its arguments.

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// installedFiles maps each path the user data writes with
// `echo '<base64>' | base64 --decode > 'PATH'` to its content.
func installedFiles(t *testing.T, userData string) map[string]string {
	t.Helper()
	out := map[string]string{}
	re := regexp.MustCompile(`echo '([A-Za-z0-9+/=]+)' \| base64 --decode > '?([^'\s]+)'?`)
	for _, m := range re.FindAllStringSubmatch(userData, -1) {
		b, err := base64.StdEncoding.DecodeString(m[1])
		if err != nil {
			t.Fatalf("user data: bad base64 for %s: %v", m[2], err)
		}
		out[m[2]] = string(b)
	}
	return out
}

func TestReadinessReplacement(t *testing.T) {
	terraformBin(t)
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("NOTICE: %s is not installed; the readiness check was NOT run", tool)
		}
	}
	var ready atomic.Bool
	admin := fakeReadyz(t, ready.Load)
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "":
			w.Write([]byte("imds-token"))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/instance-id" && r.Header.Get("X-aws-ec2-metadata-token") == "imds-token":
			w.Write([]byte("i-0123456789abcdef0"))
		default: // IMDSv1 or anything else
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(imds.Close)

	port := admin.Addr().(*net.TCPAddr).Port
	r := renderAWSWith(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml", map[string]cty.Value{
		"admin_port": cty.NumberIntVal(int64(port)),
		"readiness_replacement": cty.ObjectVal(map[string]cty.Value{
			"failures": cty.NumberIntVal(3), "interval_seconds": cty.NumberIntVal(15),
		}),
	})
	files := installedFiles(t, r.userData)
	script, service, timer := files["/usr/local/libexec/rdsproxy-health"], files["/etc/systemd/system/rdsproxy-health.service"], files["/etc/systemd/system/rdsproxy-health.timer"]
	if script == "" || service == "" || timer == "" {
		t.Fatalf("user data does not install the readiness check (files: %v)", keysOf(files))
	}
	if !strings.Contains(r.userData, "systemctl enable --now rdsproxy-health.timer") {
		t.Error("user data does not enable rdsproxy-health.timer")
	}
	if !strings.Contains(timer, "OnUnitActiveSec=15s") || !strings.Contains(timer, "OnBootSec=180s") {
		t.Errorf("timer does not run every 15 s after the 120 s grace period (+60 s):\n%s", timer)
	}

	dir := t.TempDir()
	scriptPath := filepath.Join(dir, "rdsproxy-health")
	writeFile(t, scriptPath, script)
	if err := os.Chmod(scriptPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if res := run(t, dir, os.Environ(), "bash", "-n", scriptPath); res.err != nil {
		t.Fatalf("bash -n: %v\n%s", res.err, res.stderr)
	}
	bin := filepath.Join(dir, "bin")
	calls := filepath.Join(dir, "aws-calls")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "aws"), "#!/bin/sh\necho \"$@\" >> '"+calls+"'\n")
	os.Chmod(filepath.Join(bin, "aws"), 0o755)
	state := filepath.Join(dir, "run")
	os.Mkdir(state, 0o700)
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "RUNTIME_DIRECTORY="+state, "RDSPROXY_HEALTH_IMDS="+imds.URL)
	check := func(step string, wantCalls int) {
		t.Helper()
		res := run(t, dir, env, scriptPath)
		if res.err != nil {
			t.Fatalf("%s: the check failed: %v\n%s%s", step, res.err, res.stdout, res.stderr)
		}
		b, _ := os.ReadFile(calls)
		got := strings.Count(string(b), "\n")
		if got != wantCalls {
			t.Fatalf("%s: %d aws calls, want %d:\n%s\n%s", step, got, wantCalls, b, res.stdout)
		}
	}
	ready.Store(true)
	check("ready", 0)
	ready.Store(false)
	check("unready 1", 0)
	check("unready 2", 0)
	ready.Store(true)
	check("ready again resets", 0)
	ready.Store(false)
	check("unready 1 again", 0)
	check("unready 2 again", 0)
	check("unready 3: replaced", 1)
	b, _ := os.ReadFile(calls)
	want := "autoscaling set-instance-health --region eu-west-1 --instance-id i-0123456789abcdef0 --health-status Unhealthy --should-respect-grace-period"
	if strings.TrimSpace(string(b)) != want {
		t.Errorf("aws was called with %q, want %q", strings.TrimSpace(string(b)), want)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("NOTICE: systemd-analyze not installed; the health unit and timer were NOT verified")
		return
	}
	units := t.TempDir()
	writeFile(t, filepath.Join(units, "rdsproxy-health.service"), strings.Replace(service, "ExecStart=/usr/local/libexec/rdsproxy-health", "ExecStart="+scriptPath, 1))
	writeFile(t, filepath.Join(units, "rdsproxy-health.timer"), timer)
	res := run(t, units, os.Environ(), analyze, "verify", filepath.Join(units, "rdsproxy-health.service"), filepath.Join(units, "rdsproxy-health.timer"))
	if res.err != nil || strings.TrimSpace(res.stderr) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", res.err, res.stderr)
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestReadinessReplacementOff: disabled, nothing is installed.
func TestReadinessReplacementOff(t *testing.T) {
	terraformBin(t)
	r := renderAWSWith(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml", map[string]cty.Value{
		"readiness_replacement": cty.ObjectVal(map[string]cty.Value{"enabled": cty.False}),
	})
	if strings.Contains(r.userData, "rdsproxy-health") {
		t.Error("readiness_replacement.enabled=false still installs the readiness check")
	}
}

// fakeReadyz serves the admin port's /readyz until the test ends: 200 when
// ready says so, else 503; anything else is 404.
func fakeReadyz(t *testing.T, ready func() bool) net.Listener {
	t.Helper()
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		} else if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(admin)
	t.Cleanup(func() { srv.Close() })
	return admin
}
