package discovery

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in      string
		want    Rule
		wantErr bool
	}{
		{in: "env=prod", want: Rule{Key: "env", Pattern: "prod"}},
		{in: "env=prod-*", want: Rule{Key: "env", Pattern: "prod-*"}},
		{in: "team", want: Rule{Key: "team", Presence: true}},
		{in: "env=", want: Rule{Key: "env", Pattern: ""}},
		{in: "url=a=b", want: Rule{Key: "url", Pattern: "a=b"}},
		{in: " env =x", want: Rule{Key: "env", Pattern: "x"}},
		{in: "", wantErr: true},
		{in: "=prod", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseRule(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRule(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseRule(%q) (-want +got):\n%s", tt.in, diff)
		}
		if err == nil && tt.in != "" && tt.in[0] != ' ' && got.String() != tt.in {
			t.Errorf("ParseRule(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"prod", "prod", true},
		{"prod", "Prod", false},
		{"prod", "prod2", false},
		{"", "", true},
		{"", "x", false},
		{"*", "", true},
		{"*", "anything/with/slashes", true},
		{"prod-*", "prod-eu", true},
		{"prod-*", "prod-", true},
		{"prod-*", "staging-eu", false},
		{"*-eu", "prod-eu", true},
		{"*-eu", "prod-us", false},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "acb", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a?c", "aéc", true},
		{"é*", "été", true},
		{"[ab]", "[ab]", true},
		{"[ab]", "a", false},
		{`a\*`, `a\xyz`, true},
		{"**x", "x", true},
		{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestRulesAdmit(t *testing.T) {
	must := func(allow, deny []string) Rules {
		t.Helper()
		rs, err := ParseRules(allow, deny)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	tests := []struct {
		name  string
		rules Rules
		tags  map[string]string
		want  bool
	}{
		{"default allows opted in", Rules{}, map[string]string{TagEnabled: "true"}, true},
		{"default refuses untagged", Rules{}, nil, false},
		{"default refuses enabled=false", Rules{}, map[string]string{TagEnabled: "false"}, false},
		{"default is exact", Rules{}, map[string]string{TagEnabled: "TRUE"}, false},
		{"default key is case-sensitive", Rules{}, map[string]string{"RDSProxy:Enabled": "true"}, false},
		{"deny beats default allow", must(nil, []string{"env=prod"}),
			map[string]string{TagEnabled: "true", "env": "prod"}, false},
		{"explicit allow replaces default", must([]string{"env=dev*"}, nil),
			map[string]string{"env": "dev-1"}, true},
		{"all allow rules must match", must([]string{"env=dev*", "team"}, nil),
			map[string]string{"env": "dev-1"}, false},
		{"all allow rules match", must([]string{"env=dev*", "team"}, nil),
			map[string]string{"env": "dev-1", "team": ""}, true},
		{"presence deny", must([]string{"env=*"}, []string{"rdsproxy:deny"}),
			map[string]string{"env": "x", "rdsproxy:deny": ""}, false},
		{"deny glob no match", must([]string{"env=*"}, []string{"env=prod*"}),
			map[string]string{"env": "dev"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rules.Admit(tt.tags); got != tt.want {
				t.Errorf("Admit(%v) = %v, want %v", tt.tags, got, tt.want)
			}
		})
	}
}

func TestParseRulesErrors(t *testing.T) {
	if _, err := ParseRules([]string{"=x"}, nil); err == nil {
		t.Error("ParseRules accepted an allow rule without key")
	}
	if _, err := ParseRules(nil, []string{""}); err == nil {
		t.Error("ParseRules accepted an empty deny rule")
	}
	if err := (Rules{Deny: []Rule{{Pattern: "x"}}}).Validate(); err == nil {
		t.Error("Validate accepted a rule without key")
	}
}
