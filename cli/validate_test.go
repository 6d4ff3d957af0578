package cli

import (
	"bytes"
	"strings"
	"testing"
)

// isolateAWS keeps a test from reading the developer's AWS files or
// asking the instance metadata service for credentials.
func isolateAWS(t *testing.T) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("RDSPROXY_STATE_DIR", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", home+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", home+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_PROFILE", "")
}

// Ports out of range and flag combinations a --via mode cannot work
// with are usage errors (exit 2, usage shown) found before anything is
// dialled, and the message says what is accepted.
func TestFlagUsageErrors(t *testing.T) {
	isolateAWS(t)
	direct := []string{"--via", "direct", "--server", "127.0.0.1:1"}
	tests := []struct {
		args []string
		want string
	}{
		{append([]string{"connect", "orders", "--port", "70000"}, direct...), "--port must be between 1 and 65535, or 0 for any free port; not 70000"},
		{append([]string{"connect", "orders", "--port=-1"}, direct...), "--port must be between 1 and 65535, or 0 for any free port; not -1"},
		{[]string{"connect", "orders", "--via", "direct"}, "--via direct needs --server HOST:PORT"},
		{[]string{"list", "--via", "direct"}, "--via direct needs --server HOST:PORT"},
		{[]string{"doctor", "--via", "direct"}, "--via direct needs --server HOST:PORT"},
		{[]string{"psql", "orders", "--via", "direct"}, "--via direct needs --server HOST:PORT"},
		{[]string{"token", "orders", "--via", "direct"}, "--via direct needs --server HOST:PORT"},
		// psql's arguments without --: -v is rdsproxy's too, so they
		// would reach psql changed.
		{append([]string{"psql", "orders", "-v", "ON_ERROR_STOP=1", "-f", "x.sql"}, direct...), "arguments for psql go after --"},
		{append([]string{"psql", "orders", "-Atc", "SELECT 1"}, direct...), "arguments for psql go after --"},
		{[]string{"list", "--via", "direct", "--server", "db.internal"}, `--server must be HOST:PORT, not "db.internal"`},
		{[]string{"list", "--via", "direct", "--server", "db.internal:70000"}, "--server db.internal:70000: the port must be between 1 and 65535"},
		{[]string{"list", "--via", "ssm", "--ssm-server", "", "--region", "eu-west-1"}, "--via ssm needs --ssm-target or --ssm-server"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-port", "70000"}, "--ssm-port must be between 1 and 65535, not 70000"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-port", "0"}, "--ssm-port must be between 1 and 65535, not 0"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-sessions", "0"}, "--ssm-sessions must be between 1 and 64, not 0"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-sessions", "1000"}, "--ssm-sessions must be between 1 and 64, not 1000"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-document", "rdsproxy-port", "--ssm-host", "10.0.0.5"}, "--ssm-document pins the server's address on the node, so it cannot be combined with --ssm-host"},
		{[]string{"list", "--via", "ssm", "--ssm-target", "i-0123", "--ssm-document", "bad name!"}, `--ssm-document must be an SSM document name (3 to 128 letters, digits, _ . -) or a document's ARN, not "bad name!"`},
		{[]string{"list", "--via", "kube", "--kube-deployment", ""}, "--via kube needs --kube-deployment or --kube-selector"},
		{[]string{"list", "--via", "kube", "--kube-port", "65536"}, "--kube-port must be between 1 and 65535, not 65536"},
		{[]string{"server", "--listen", "127.0.0.1:70000"}, "--listen 127.0.0.1:70000: the port must be between 0 and 65535"},
		{[]string{"server", "--admin-addr", "localhost"}, `--admin-addr must be HOST:PORT, not "localhost"`},
		{[]string{"server", "--admin-addr", "127.0.0.1:abc"}, `--admin-addr 127.0.0.1:abc: "abc" is neither a port number nor a service this machine knows`},
		{[]string{"server", "--listen", "127.0.0.1:abc"}, `--listen 127.0.0.1:abc: "abc" is neither a port number nor a service this machine knows`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := Run(tt.args, Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
		if code != ExitUsage || !strings.Contains(stderr.String(), tt.want) || !strings.HasPrefix(stdout.String(), "Usage: rdsproxy "+tt.args[0]) {
			t.Errorf("rdsproxy %q: exit %d\nstderr: %s\nstdout: %.40q\nwant exit 2, the usage on stdout and %q", tt.args, code, stderr.String(), stdout.String(), tt.want)
		}
	}
}

// rdsproxy psql without psql on PATH says to install the PostgreSQL
// client, before it opens a tunnel (here to a port where nothing listens,
// which would fail otherwise) or reads credentials.
func TestPsqlNotInstalled(t *testing.T) {
	isolateAWS(t)
	t.Setenv("PATH", t.TempDir())
	var stdout, stderr bytes.Buffer
	code := Run([]string{"psql", "orders", "--via", "direct", "--server", "127.0.0.1:1"},
		Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
	want := "psql is not installed (not on PATH): install the PostgreSQL client"
	if code != ExitFailure || !strings.Contains(stderr.String(), want) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr.String(), want)
	}
}
