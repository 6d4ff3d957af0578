package discovery

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePrincipalNormalisesAssumedRoles(t *testing.T) {
	tests := []struct {
		arn  string
		want Principal
	}{
		{"arn:aws:sts::111122223333:assumed-role/rdsproxy-admin/ci-run-42", Principal{
			ARN: "arn:aws:sts::111122223333:assumed-role/rdsproxy-admin/ci-run-42", Account: "111122223333",
			Normalized: "arn:aws:iam::111122223333:role/rdsproxy-admin", Session: "ci-run-42"}},
		{"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Dev_0123abcd/alice@example.com", Principal{
			ARN: "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Dev_0123abcd/alice@example.com", Account: "111122223333",
			Normalized: "arn:aws:iam::111122223333:role/AWSReservedSSO_Dev_0123abcd", Session: "alice@example.com"}},
		{"arn:aws-cn:sts::111122223333:assumed-role/r/s", Principal{
			ARN: "arn:aws-cn:sts::111122223333:assumed-role/r/s", Account: "111122223333",
			Normalized: "arn:aws-cn:iam::111122223333:role/r", Session: "s"}},
		{"arn:aws:iam::111122223333:user/bob", Principal{
			ARN: "arn:aws:iam::111122223333:user/bob", Account: "111122223333", Normalized: "arn:aws:iam::111122223333:user/bob"}},
		{"arn:aws:iam::111122223333:root", Principal{
			ARN: "arn:aws:iam::111122223333:root", Account: "111122223333", Normalized: "arn:aws:iam::111122223333:root"}},
		{"arn:aws:sts::111122223333:federated-user/carol", Principal{
			ARN: "arn:aws:sts::111122223333:federated-user/carol", Account: "111122223333", Normalized: "arn:aws:sts::111122223333:federated-user/carol"}},
	}
	for _, tt := range tests {
		got, err := ParsePrincipal(tt.arn)
		if err != nil {
			t.Errorf("ParsePrincipal(%q): %v", tt.arn, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParsePrincipal(%q) (-want +got):\n%s", tt.arn, diff)
		}
	}
}

func TestParsePrincipalRefusesNonARNs(t *testing.T) {
	for _, arn := range []string{"", "alice", "arn:aws:iam::", "arn:aws:iam:::user/x", "arn:aws:sts::1:assumed-role/only-role",
		"arn:aws:sts::1:assumed-role//s", "urn:aws:iam::1:user/x"} {
		if p, err := ParsePrincipal(arn); err == nil {
			t.Errorf("ParsePrincipal(%q) = %+v, want an error", arn, p)
		}
	}
}

func TestParsePrincipalsSplitsOnCommasAndSpaces(t *testing.T) {
	got := ParsePrincipals(" arn:aws:iam::1:role/a,arn:aws:iam::1:user/b  arn:aws:iam::1:role/a,,\tarn:aws:iam::*:role/c* ")
	want := []string{"arn:aws:iam::1:role/a", "arn:aws:iam::1:user/b", "arn:aws:iam::*:role/c*"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParsePrincipals (-want +got):\n%s", diff)
	}
}

func TestAllowsPrincipal(t *testing.T) {
	must := func(arn string) *Principal {
		p, err := ParsePrincipal(arn)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	admin := must("arn:aws:sts::111122223333:assumed-role/rdsproxy-admin/s1")
	alice := must("arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Dev_0123/alice@example.com")
	bob := must("arn:aws:iam::111122223333:user/bob")
	other := must("arn:aws:sts::999988887777:assumed-role/rdsproxy-admin/s1")
	tests := []struct {
		name  string
		rule  []string
		p     *Principal
		allow bool
	}{
		{"no rule admits everyone", nil, bob, true},
		{"no rule admits no identity", nil, nil, true},
		{"a rule refuses no identity", []string{"*"}, nil, false},
		{"role ARN matches its sessions", []string{"arn:aws:iam::111122223333:role/rdsproxy-admin"}, admin, true},
		{"role ARN in another account", []string{"arn:aws:iam::111122223333:role/rdsproxy-admin"}, other, false},
		{"account wildcard", []string{"arn:aws:iam::*:role/rdsproxy-admin"}, other, true},
		{"glob on SSO role", []string{"arn:aws:iam::111122223333:role/AWSReservedSSO_Dev_*"}, alice, true},
		{"one person of an SSO role", []string{"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Dev_*/alice@example.com"}, alice, true},
		{"another person of an SSO role", []string{"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Dev_*/bob@example.com"}, alice, false},
		{"user", []string{"arn:aws:iam::111122223333:role/x", "arn:aws:iam::111122223333:user/bob"}, bob, true},
		{"user prefix is not a match", []string{"arn:aws:iam::111122223333:user/bo"}, bob, false},
		{"the empty tag's rule admits nobody", []string{noPrincipal}, bob, false},
	}
	for _, tt := range tests {
		target := Target{Principals: tt.rule}
		if got := AllowsPrincipal(&target, tt.p); got != tt.allow {
			t.Errorf("%s: AllowsPrincipal = %v, want %v", tt.name, got, tt.allow)
		}
	}
}

func TestPolicyReadsThePrincipalsTag(t *testing.T) {
	p := Policy{}
	dbs := []Database{
		{Region: "us-east-1", Kind: KindCluster, Identifier: "c", Engine: "aurora-postgresql", Status: "available", IAMAuth: true,
			Endpoint: "c.x:5432", ReaderEndpoint: "c-ro.x:5432",
			Tags: map[string]string{TagEnabled: "true", TagPrincipals: "arn:aws:iam::1:role/a, arn:aws:iam::1:user/b"}},
		{Region: "us-east-1", Kind: KindInstance, Identifier: "empty", Engine: "postgres", Status: "available", IAMAuth: true,
			Endpoint: "e.x:5432", Tags: map[string]string{TagEnabled: "true", TagPrincipals: " , "}},
	}
	targets, warns := p.Targets(dbs)
	byName := map[string]Target{}
	for _, tg := range targets {
		byName[tg.Name] = tg
	}
	want := []string{"arn:aws:iam::1:role/a", "arn:aws:iam::1:user/b"}
	for _, name := range []string{"c", "c-ro"} {
		if diff := cmp.Diff(want, byName[name].Principals); diff != "" {
			t.Errorf("%s principals (-want +got):\n%s", name, diff)
		}
	}
	if got := byName["empty"].Principals; len(got) != 1 || got[0] != noPrincipal {
		t.Errorf("empty tag: principals = %q, want the rule that admits nobody", got)
	}
	if len(warns) != 1 {
		t.Errorf("warnings = %v, want one for the empty tag", warns)
	}
}
