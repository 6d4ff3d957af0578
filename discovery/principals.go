package discovery

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rdsproxy/rdsproxy/contract"
)

// TagPrincipals limits who may reach a target: ARN globs separated by
// commas or spaces, matched against the caller's verified identity.
const TagPrincipals = "rdsproxy:principals"

// Principal is a caller as STS names it; see contract.Principal.
type Principal = contract.Principal

// ParsePrincipal reads an ARN from GetCallerIdentity and normalises it.
func ParsePrincipal(arn string) (Principal, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[4] == "" || parts[5] == "" {
		return Principal{}, fmt.Errorf("%.100q is not an ARN of the form arn:PARTITION:SERVICE::ACCOUNT:RESOURCE", arn)
	}
	p := Principal{ARN: arn, Account: parts[4], Normalized: arn}
	if parts[2] == "sts" {
		if rest, ok := strings.CutPrefix(parts[5], "assumed-role/"); ok {
			role, session, ok := strings.Cut(rest, "/")
			if !ok || role == "" || session == "" {
				return Principal{}, fmt.Errorf("assumed-role ARN %.100q has no ROLE/SESSION", arn)
			}
			p.Normalized = "arn:" + parts[1] + ":iam::" + parts[4] + ":role/" + role
			p.Session = session
		}
	}
	return p, nil
}

// ParsePrincipals splits a rdsproxy:principals value into ARN globs,
// dropping empties and repeats.
func ParsePrincipals(v string) []string {
	var out []string
	for g := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// AllowsPrincipal reports whether t's principal rule admits p:
// true when the target has no rule, else when a glob matches p's
// normalised ARN or its ARN as STS wrote it (which, for an assumed role,
// names the session). '*' matches any run of characters, '/' and ':'
// included; '?' one character. A nil p (no verified identity) is admitted
// only by targets without a rule.
func AllowsPrincipal(t *Target, p *Principal) bool {
	if len(t.Principals) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, g := range t.Principals {
		if globMatch(g, p.Normalized) || globMatch(g, p.ARN) {
			return true
		}
	}
	return false
}

// noPrincipal is the rule of an empty rdsproxy:principals tag: no ARN
// matches it, so the target admits nobody.
const noPrincipal = "(none)"
