package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// writeClientFiles writes config.yaml (one server, "sandbox", the default)
// and env.sh (what to source to use the CLI against the sandbox) into the
// demo directory. It returns env.sh's path and the environment it sets.
func (d *demo) writeClientFiles(serverPort string) (string, []string, error) {
	cfg := filepath.Join(d.dir, "config.yaml")
	yaml := fmt.Sprintf(`# rdsproxy client configuration for the demo's sandbox.
default-server: sandbox
servers:
  sandbox:
    via: ssm
    ssm-server: %s
    ssm-port: %s
    user: %s
`, sandbox.WorldServer, serverPort, sandbox.UserIAM)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return "", nil, fmt.Errorf("write the client configuration: %w", err)
	}
	binDir := filepath.Dir(d.bin)
	env := append(d.world.ClientEnv(),
		"RDSPROXY_CONFIG="+cfg,
		"RDSPROXY_STATE_DIR="+filepath.Join(d.dir, "state"),
		"PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var b strings.Builder
	b.WriteString("# Source this file to point the rdsproxy CLI at the demo's sandbox.\n")
	b.WriteString("# It clears AWS_* and RDSPROXY_* first, so no real profile or server is used.\n")
	b.WriteString(`for v in $(env | sed -n -e 's/^\(AWS_[A-Z0-9_]*\)=.*/\1/p' -e 's/^\(RDSPROXY_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done` + "\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" {
			fmt.Fprintf(&b, "export PATH=%s\n", shellQuote(binDir)+`:"$PATH"`)
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	path := filepath.Join(d.dir, "env.sh")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", nil, fmt.Errorf("write the env file: %w", err)
	}
	return path, env, nil
}

// clientEnviron is this process's environment without AWS_* and
// RDSPROXY_* (the user's own profile must not reach the sandbox), plus env.
func clientEnviron(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RDSPROXY_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// shellQuote quotes s for sh, bash and zsh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
