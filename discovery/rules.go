package discovery

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Tag keys the discovery reads. Keys are case-sensitive, as in AWS.
const (
	TagEnabled   = "rdsproxy:enabled"
	TagName      = "rdsproxy:name"
	TagDBName    = "rdsproxy:db-name"
	TagLocalPort = "rdsproxy:local-port"
	TagUsers     = "rdsproxy:users"
	TagReadOnly  = "rdsproxy:read-only"
)

// DefaultAllow is the allow rule used when none is configured: databases
// are opted in explicitly with the tag rdsproxy:enabled=true, never by
// accident.
func DefaultAllow() Rule { return Rule{Key: TagEnabled, Pattern: "true"} }

// Rule matches one tag. With Presence set, the tag only has to exist;
// otherwise its value must match Pattern, a glob where '*' matches any run
// of characters (including none, and including '/') and '?' matches exactly
// one character. Every other character, '[' and '\' included, matches
// itself, so tag values need no escaping. A Pattern without '*' or '?' is
// an exact comparison.
type Rule struct {
	Key      string
	Pattern  string
	Presence bool
}

// ParseRule reads "key=value", "key=glob" or "key" (presence). The key is
// everything before the first '='; the value may contain further '='.
// "key=" matches a tag whose value is empty.
func ParseRule(s string) (Rule, error) {
	key, pattern, hasValue := strings.Cut(s, "=")
	key = strings.TrimSpace(key)
	if key == "" {
		return Rule{}, fmt.Errorf("tag rule %q has no key", s)
	}
	if !hasValue {
		return Rule{Key: key, Presence: true}, nil
	}
	return Rule{Key: key, Pattern: pattern}, nil
}

// String gives the rule back in the form ParseRule reads.
func (r Rule) String() string {
	if r.Presence {
		return r.Key
	}
	return r.Key + "=" + r.Pattern
}

// Match reports whether tags satisfy the rule.
func (r Rule) Match(tags map[string]string) bool {
	v, ok := tags[r.Key]
	if !ok {
		return false
	}
	return r.Presence || globMatch(r.Pattern, v)
}

// Rules select databases by their tags: a database passes when every Allow
// rule matches and no Deny rule matches. An empty Allow means
// []Rule{DefaultAllow()}.
type Rules struct {
	Allow []Rule
	Deny  []Rule
}

// ParseRules parses allow and deny rules in the ParseRule syntax.
func ParseRules(allow, deny []string) (Rules, error) {
	var rs Rules
	for _, s := range allow {
		r, err := ParseRule(s)
		if err != nil {
			return Rules{}, fmt.Errorf("allow rule: %w", err)
		}
		rs.Allow = append(rs.Allow, r)
	}
	for _, s := range deny {
		r, err := ParseRule(s)
		if err != nil {
			return Rules{}, fmt.Errorf("deny rule: %w", err)
		}
		rs.Deny = append(rs.Deny, r)
	}
	return rs, nil
}

// Validate reports a rule without a key.
func (rs Rules) Validate() error {
	for _, r := range slices.Concat(rs.Allow, rs.Deny) {
		if r.Key == "" {
			return fmt.Errorf("tag rule %q has no key", r.String())
		}
	}
	return nil
}

// Admit reports whether tags pass the rules.
func (rs Rules) Admit(tags map[string]string) bool {
	if len(rs.Allow) == 0 && !DefaultAllow().Match(tags) {
		return false
	}
	for _, r := range rs.Allow {
		if !r.Match(tags) {
			return false
		}
	}
	for _, r := range rs.Deny {
		if r.Match(tags) {
			return false
		}
	}
	return true
}

// globMatch matches s against a pattern of literal characters, '*' and '?'
// (see Rule). It works on bytes except that '?' consumes one UTF-8
// character. It runs in O(len(pattern)·len(s)) at worst: a '*' only ever
// backtracks to the latest star.
func globMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starI = p, i
			p++
		case p < len(pattern) && pattern[p] == '?':
			p++
			i += runeLen(s[i:])
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case starP >= 0:
			p = starP + 1
			starI += runeLen(s[starI:])
			i = starI
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// runeLen is the byte length of the first UTF-8 character of s (1 for an
// invalid byte).
func runeLen(s string) int {
	_, n := utf8.DecodeRuneInString(s)
	return n
}
