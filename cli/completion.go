package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
)

// CompletionCmd prints a shell completion script.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

// TargetsCmd prints the target names of the last list (for completion).
type TargetsCmd struct{}

// Run prints the cached target names, one per line.
func (TargetsCmd) Run(env Env) error {
	st, err := newStateStore().load()
	if err != nil {
		return err
	}
	for _, name := range st.Targets {
		fmt.Fprintln(env.Stdout, name)
	}
	return nil
}

// Run prints the script: commands, each command's flags, and target names
// from the last target list this machine fetched.
func (c *CompletionCmd) Run(kctx *kong.Context, env Env) error {
	cmds := map[string][]string{}
	var names []string
	for _, n := range kctx.Model.Children {
		if n.Hidden {
			continue
		}
		names = append(names, n.Name)
		var flags []string
		for _, f := range append(kctx.Model.Flags, n.Flags...) {
			if !f.Hidden {
				flags = append(flags, "--"+f.Name)
			}
		}
		sort.Strings(flags)
		cmds[n.Name] = flags
	}
	switch c.Shell {
	case "bash":
		fmt.Fprint(env.Stdout, bashScript(names, cmds))
	case "zsh":
		fmt.Fprint(env.Stdout, "autoload -U +X bashcompinit && bashcompinit\n"+bashScript(names, cmds))
	case "fish":
		fmt.Fprint(env.Stdout, fishScript(names, cmds))
	}
	return nil
}

func bashScript(names []string, cmds map[string][]string) string {
	var b strings.Builder
	b.WriteString("# rdsproxy completion for bash (and zsh via bashcompinit)\n_rdsproxy() {\n")
	b.WriteString("  local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]}\n")
	fmt.Fprintf(&b, "  if [ \"$COMP_CWORD\" -eq 1 ]; then COMPREPLY=($(compgen -W %q -- \"$cur\")); return; fi\n", strings.Join(names, " "))
	b.WriteString("  case \"$cmd\" in\n")
	for _, n := range names {
		words := strings.Join(cmds[n], " ")
		if n == "connect" || n == "psql" || n == "token" || n == "doctor" {
			fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W \"%s $(rdsproxy __targets 2>/dev/null)\" -- \"$cur\"));;\n", n, words)
			continue
		}
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W %q -- \"$cur\"));;\n", n, words)
	}
	b.WriteString("  esac\n}\ncomplete -F _rdsproxy rdsproxy\n")
	return b.String()
}

func fishScript(names []string, cmds map[string][]string) string {
	var b strings.Builder
	b.WriteString("# rdsproxy completion for fish\n")
	fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_use_subcommand' -a %q\n", strings.Join(names, " "))
	for _, n := range names {
		for _, f := range cmds[n] {
			fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_seen_subcommand_from %s' -l %s\n", n, strings.TrimPrefix(f, "--"))
		}
		if n == "connect" || n == "psql" || n == "token" || n == "doctor" {
			fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_seen_subcommand_from %s' -a '(rdsproxy __targets 2>/dev/null)'\n", n)
		}
	}
	return b.String()
}
