package cli

import (
	"fmt"
	"maps"
	"slices"
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

// ServersCmd prints the server names of the configuration files (for
// completing --use).
type ServersCmd struct{}

// Run prints the names of the files' servers: sections, one per line:
// those --use can name.
func (ServersCmd) Run(files *fileResolver, env Env) error {
	for _, name := range files.serverNames() {
		fmt.Fprintln(env.Stdout, name)
	}
	return nil
}

// flagNames are the words that set f: --name, and --no-name (or the
// negation the tag names) for a negatable flag such as --[no-]striping.
func flagNames(f *kong.Flag) []string {
	names := []string{"--" + f.Name}
	switch neg := f.Tag.Negatable; neg {
	case "":
	case "_": // kong's mark for the default negation
		names = append(names, "--no-"+f.Name)
	default:
		names = append(names, "--"+neg)
	}
	return names
}

// takesTarget are the commands whose argument is a target name.
var takesTarget = map[string]bool{"connect": true, "psql": true, "token": true, "doctor": true, "env": true}

// valueWords are the shell words that complete a flag's value: an enum's
// values, or a command that prints them.
func valueWords(kctx *kong.Context) map[string]string {
	words := map[string]string{"--use": "$(rdsproxy __servers 2>/dev/null)", "--log-level": strings.Join(logLevels, " ")}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Enum != "" {
				words["--"+f.Name] = strings.ReplaceAll(f.Enum, ",", " ")
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(kctx.Model.Node)
	return words
}

// Run prints the script: commands, each command's flags, the values of
// flags that have a fixed set (--via, --log-level, …), the configuration
// file's servers for --use, and target names from the last target list
// this machine fetched.
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
				flags = append(flags, flagNames(f)...)
			}
		}
		sort.Strings(flags)
		cmds[n.Name] = flags
	}
	values := valueWords(kctx)
	switch c.Shell {
	case "bash":
		fmt.Fprint(env.Stdout, bashScript(names, cmds, values))
	case "zsh":
		fmt.Fprint(env.Stdout, "autoload -U +X bashcompinit && bashcompinit\n"+bashScript(names, cmds, values))
	case "fish":
		fmt.Fprint(env.Stdout, fishScript(names, cmds, values))
	}
	return nil
}

func bashScript(names []string, cmds map[string][]string, values map[string]string) string {
	var b strings.Builder
	b.WriteString("# rdsproxy completion for bash (and zsh via bashcompinit)\n_rdsproxy() {\n")
	b.WriteString("  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=${COMP_WORDS[1]}\n")
	fmt.Fprintf(&b, "  if [ \"$COMP_CWORD\" -eq 1 ]; then COMPREPLY=($(compgen -W %q -- \"$cur\")); return; fi\n", strings.Join(names, " "))
	b.WriteString("  case \"$prev\" in\n")
	for _, flag := range slices.Sorted(maps.Keys(values)) {
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); return;;\n", flag, values[flag])
	}
	b.WriteString("  esac\n")
	b.WriteString("  case \"$cmd\" in\n")
	for _, n := range names {
		words := strings.Join(cmds[n], " ")
		if takesTarget[n] {
			fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W \"%s $(rdsproxy __targets 2>/dev/null)\" -- \"$cur\"));;\n", n, words)
			continue
		}
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W %q -- \"$cur\"));;\n", n, words)
	}
	b.WriteString("  esac\n}\ncomplete -F _rdsproxy rdsproxy\n")
	return b.String()
}

func fishScript(names []string, cmds map[string][]string, values map[string]string) string {
	var b strings.Builder
	b.WriteString("# rdsproxy completion for fish\n")
	fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_use_subcommand' -a %q\n", strings.Join(names, " "))
	for _, n := range names {
		for _, f := range cmds[n] {
			arg := ""
			if v, ok := values[f]; ok {
				arg = fmt.Sprintf(" -x -a '%s'", strings.Replace(v, "$(", "(", 1)) // fish: (cmd)
			}
			fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_seen_subcommand_from %s' -l %s%s\n", n, strings.TrimPrefix(f, "--"), arg)
		}
		if takesTarget[n] {
			fmt.Fprintf(&b, "complete -c rdsproxy -f -n '__fish_seen_subcommand_from %s' -a '(rdsproxy __targets 2>/dev/null)'\n", n)
		}
	}
	return b.String()
}
