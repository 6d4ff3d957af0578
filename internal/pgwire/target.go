package pgwire

import (
	"strings"
)

// TargetParam is the startup parameter that names the target (design §2).
const TargetParam = "rdsproxy.target"

// reservedPrefix marks parameters for rdsproxy that never reach a database.
const reservedPrefix = "rdsproxy."

// IsReserved reports whether a startup parameter is for rdsproxy only.
func IsReserved(key string) bool { return strings.HasPrefix(key, reservedPrefix) }

// TakeTarget finds the target a client asked for, either as the
// rdsproxy.target parameter or as `-c rdsproxy.target=NAME` (or
// `--rdsproxy.target=NAME`) inside options, and returns the parameters
// with every rdsproxy.* setting removed. ok is false when none is given.
func TakeTarget(params Params) (target string, rest Params, ok bool) {
	target, ok = params.Get(TargetParam)
	rest = params.Without(IsReserved)
	opts, has := rest.Get("options")
	if !has {
		return target, rest, ok
	}
	kept, fromOpts := takeOption(splitOptions(opts))
	if fromOpts != "" && !ok {
		target, ok = fromOpts, true
	}
	if len(kept) == 0 {
		return target, rest.Without(func(k string) bool { return k == "options" }), ok
	}
	return target, rest.Set("options", joinOptions(kept)), ok
}

// takeOption removes rdsproxy.* settings from split options.
func takeOption(args []string) (kept []string, target string) {
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
			target = v
		}
	}
	return kept, target
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
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
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
			if r == ' ' || r == '\\' || r == '\t' || r == '\n' || r == '\r' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		quoted[i] = b.String()
	}
	return strings.Join(quoted, " ")
}
