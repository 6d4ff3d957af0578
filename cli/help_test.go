package cli

import (
	"bytes"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the README's usage block from the binary's help")

const (
	usageBegin = "<!-- usage:begin -->\n"
	usageEnd   = "<!-- usage:end -->"
)

// helpCommands are the top level and every command that is not hidden,
// so the README's usage section covers every command.
func helpCommands(t *testing.T) [][]string {
	parser, err := newParser(&CLI{}, Env{Stdout: io.Discard, Stderr: io.Discard}, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	cmds := [][]string{{}}
	for _, n := range parser.Model.Children {
		if !n.Hidden {
			cmds = append(cmds, []string{n.Name})
		}
	}
	return cmds
}

// The README's usage section is the binary's help, verbatim.
func TestHelpMatchesREADME(t *testing.T) {
	var want strings.Builder
	for _, cmd := range helpCommands(t) {
		var out bytes.Buffer
		code := Run(append(cmd, "--help"), Env{Stdout: &out, Stderr: &out, Version: "test"})
		if code != ExitOK {
			t.Fatalf("%v --help: exit %d\n%s", cmd, code, out.String())
		}
		want.WriteString("```\n$ rdsproxy " + strings.Join(append(cmd, "--help"), " ") + "\n" + out.String() + "```\n\n")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(readme, []byte(usageBegin))
	end := bytes.Index(readme, []byte(usageEnd))
	if start < 0 || end < start {
		t.Fatal("README.md lacks the usage markers")
	}
	got := string(readme[start+len(usageBegin) : end])
	if got == want.String() {
		return
	}
	if !*update {
		t.Fatalf("README.md's usage block differs from the binary's help; run: go test ./cli -run Help -update")
	}
	out := append([]byte{}, readme[:start+len(usageBegin)]...)
	out = append(out, want.String()...)
	out = append(out, readme[end:]...)
	if err := os.WriteFile("../README.md", out, 0o644); err != nil {
		t.Fatal(err)
	}
}
