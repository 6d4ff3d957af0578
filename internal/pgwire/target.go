package pgwire

import (
	"strings"

	"github.com/rdsproxy/rdsproxy/contract"
)

// TargetParam is the startup parameter that names the target (docs/architecture.md §2).
const TargetParam = contract.TargetParam

// reservedPrefix marks parameters for rdsproxy that never reach a database.
const reservedPrefix = "rdsproxy."

// IsReserved reports whether a startup parameter is for rdsproxy only.
func IsReserved(key string) bool { return strings.HasPrefix(key, reservedPrefix) }

// TakeTarget finds the target a client asked for, either as the
// rdsproxy.target parameter or as `-c rdsproxy.target=NAME` (or
// `--rdsproxy.target=NAME`) inside options, and returns the parameters
// with every rdsproxy.* setting removed. target is empty when none is
// given. A target named more than once, in any mix of the two forms, is
// refused with an *Error, as a repeated startup parameter is.
func TakeTarget(params Params) (target string, rest Params, err error) {
	var names []string
	if name, ok := params.Get(TargetParam); ok {
		names = append(names, name)
	}
	rest, fromOpts := StripReserved(params)
	if names = append(names, fromOpts...); len(names) > 1 {
		return "", nil, repeated(TargetParam)
	}
	if len(names) == 0 {
		return "", rest, nil
	}
	return names[0], rest, nil
}

// StripReserved returns params without any rdsproxy.* setting, whether a
// parameter or inside options, and the targets named inside options.
func StripReserved(params Params) (rest Params, optTargets []string) {
	rest = params.Without(IsReserved)
	opts, has := rest.Get("options")
	if !has {
		return rest, nil
	}
	kept, targets := takeOption(splitOptions(opts))
	if len(kept) == 0 {
		return rest.Without(func(k string) bool { return k == "options" }), targets
	}
	return rest.Set("options", joinOptions(kept)), targets
}

// takeOption removes rdsproxy.* settings from split options and returns
// the target names they held.
func takeOption(args []string) (kept, targets []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		var setting string
		switch {
		case a == "-c" && i+1 < len(args):
			setting = args[i+1]
			if !IsReserved(setting) {
				kept = append(kept, a, setting)
			}
			i++
		case strings.HasPrefix(a, "-c") && len(a) > 2:
			setting = a[2:]
			if !IsReserved(setting) {
				kept = append(kept, a)
			}
		case strings.HasPrefix(a, "--"):
			setting = a[2:]
			if !IsReserved(setting) {
				kept = append(kept, a)
			}
		default:
			kept = append(kept, a)
			continue
		}
		if k, v, found := strings.Cut(setting, "="); found && k == TargetParam {
			targets = append(targets, v)
		}
	}
	return kept, targets
}

// isOptionSpace is C's isspace in the "C" locale, which PostgreSQL's
// pg_split_opts uses: vertical tab and form feed separate options too.
func isOptionSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

// splitOptions splits the options parameter the way PostgreSQL does:
// on unescaped white space, with backslash escaping the next character.
func splitOptions(s string) []string {
	var args []string
	var cur strings.Builder
	inArg, escaped := false, false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped, inArg = false, true
		case r == '\\':
			escaped, inArg = true, true
		case isOptionSpace(r):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if escaped { // a trailing backslash escapes nothing: keep it
		cur.WriteByte('\\')
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// joinOptions is the inverse of splitOptions.
func joinOptions(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		var b strings.Builder
		for _, r := range a {
			if r == '\\' || isOptionSpace(r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		quoted[i] = b.String()
	}
	return strings.Join(quoted, " ")
}
