package terraform_test

// cloudwatch_logs as the instance would run it: the files the user data
// installs, read back and checked against each other, and the export unit
// verified by systemd-analyze.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestCloudWatchLogs(t *testing.T) {
	terraformBin(t)
	r := renderAWSWith(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml", map[string]cty.Value{
		"cloudwatch_logs": cty.ObjectVal(map[string]cty.Value{"enabled": cty.True}),
	})
	files := installedFiles(t, r.userData)
	unit := files["/etc/systemd/system/rdsproxy-journal-export.service"]
	agent := files["/opt/aws/amazon-cloudwatch-agent/etc/rdsproxy.json"]
	rotate := files["/etc/logrotate.d/rdsproxy"]
	if unit == "" || agent == "" || rotate == "" {
		t.Fatalf("user data does not install the export unit, agent config and logrotate config (files: %v)", keysOf(files))
	}
	m := regexp.MustCompile(`(?m)^StandardOutput=append:(\S+)$`).FindStringSubmatch(unit)
	if m == nil || !strings.Contains(unit, "ExecStart=/usr/bin/journalctl --unit=rdsproxy.service --output=cat --follow --cursor-file=") {
		t.Fatalf("the export unit does not follow rdsproxy's journal into a file:\n%s", unit)
	}
	logFile := m[1]
	var cfg struct {
		Logs struct {
			LogsCollected struct {
				Files struct {
					CollectList []struct {
						FilePath      string `json:"file_path"`
						LogGroupName  string `json:"log_group_name"`
						LogStreamName string `json:"log_stream_name"`
					} `json:"collect_list"`
				} `json:"files"`
			} `json:"logs_collected"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(agent), &cfg); err != nil {
		t.Fatalf("agent config: %v\n%s", err, agent)
	}
	list := cfg.Logs.LogsCollected.Files.CollectList
	if len(list) != 1 || list[0].FilePath != logFile || list[0].LogGroupName != "/rdsproxy/orders" || list[0].LogStreamName != "{instance_id}" {
		t.Errorf("the agent ships %+v; want %s to /rdsproxy/orders, one stream per instance", list, logFile)
	}
	if !strings.HasPrefix(strings.TrimSpace(rotate), logFile+" {") || !strings.Contains(rotate, "copytruncate") {
		t.Errorf("logrotate does not rotate %s in place (copytruncate keeps the unit's file descriptor valid):\n%s", logFile, rotate)
	}
	for _, want := range []string{"dnf install -y --quiet amazon-cloudwatch-agent", "amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s", "systemctl enable --now rdsproxy-journal-export.service"} {
		if !strings.Contains(r.userData, want) {
			t.Errorf("user data does not run %q", want)
		}
	}
	if n := len(encodeUserData(r.userData)); n > 16384 {
		t.Errorf("user data with logs, the readiness check and the lifecycle hooks is %d bytes gzipped and base64-encoded; EC2 accepts at most 16384", n)
	}
	script := filepath.Join(t.TempDir(), "user-data.sh")
	writeFile(t, script, r.userData)
	if res := run(t, ".", os.Environ(), "bash", "-n", script); res.err != nil {
		t.Fatalf("bash -n: %v\n%s", res.err, res.stderr)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("NOTICE: systemd-analyze not installed; the export unit was NOT verified")
		return
	}
	if _, err := os.Stat("/usr/bin/journalctl"); err != nil {
		t.Log("NOTICE: no /usr/bin/journalctl here; the export unit was NOT verified")
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "rdsproxy-journal-export.service")
	writeFile(t, path, strings.ReplaceAll(unit, logFile, filepath.Join(dir, "server.log")))
	if res := run(t, dir, os.Environ(), analyze, "verify", path); res.err != nil || strings.TrimSpace(res.stderr) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", res.err, res.stderr)
	}
}

// TestCloudWatchLogsOff: by default nothing of it is installed.
func TestCloudWatchLogsOff(t *testing.T) {
	terraformBin(t)
	r := renderAWS(t, "/usr/local/bin/rdsproxy", "/etc/rdsproxy/server.yaml")
	if strings.Contains(r.userData, "cloudwatch") || strings.Contains(r.userData, "journal-export") {
		t.Error("the default user data installs CloudWatch Logs shipping")
	}
}
