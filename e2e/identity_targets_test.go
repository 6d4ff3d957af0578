package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
	"github.com/rdsproxy/rdsproxy/server"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// GET /v1/targets answers a caller with identity with the targets it may
// reach and who the server thinks it is; without identity, every target,
// or 401 with a sentence when identity is required, counted as the
// challenge every client starts with, not as a missing identity.
func TestIdentityFiltersTargetList(t *testing.T) {
	t.Cleanup(func() { checkNoIdentitySecrets(t) })
	reg := prometheus.NewRegistry()
	strict := startStack(t, withIdentity(t, false, ""), func(c *server.Config) { c.Metrics = server.NewMetrics(reg) })
	lenient := startStack(t, withIdentity(t, true, ""))
	fetch := func(st *stack, p *sandbox.STSPrincipal) (contract.TargetList, error) {
		tun, err := tunnel.NewDirect(st.serverAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer tun.Close()
		var ids client.Identities
		if p != nil {
			ids = recordIdentities(client.NewIdentitySigner(credentials.NewStaticCredentialsProvider(p.AccessKeyID, p.SecretAccessKey, p.SessionToken), nil))
		}
		return client.FetchTargetList(t.Context(), tun, nil, ids)
	}
	names := func(l contract.TargetList) []string {
		var out []string
		for _, tg := range l.Targets {
			out = append(out, tg.Name)
		}
		return out
	}
	for _, tt := range []struct {
		p          sandbox.STSPrincipal
		has, hasnt []string
	}{
		{sandbox.PrincipalAdmin, []string{"admins", "app"}, []string{"devs", "alice-only"}},
		{sandbox.PrincipalSSO, []string{"devs", "alice-only", "app"}, []string{"admins"}},
		{sandbox.PrincipalUser, []string{"devs", "app"}, []string{"admins", "alice-only"}},
	} {
		for _, st := range []*stack{strict, lenient} {
			list, err := fetch(st, &tt.p)
			if err != nil {
				t.Fatalf("%s: %v", tt.p.ARN, err)
			}
			got := names(list)
			for _, n := range tt.has {
				if !slices.Contains(got, n) {
					t.Errorf("%s sees %v, want %s among them", tt.p.ARN, got, n)
				}
			}
			for _, n := range tt.hasnt {
				if slices.Contains(got, n) {
					t.Errorf("%s sees %v, want no %s", tt.p.ARN, got, n)
				}
			}
			if list.Caller == nil || list.Caller.ARN != tt.p.ARN || list.Identity == nil || list.Identity.ServerID != testServerID {
				t.Errorf("caller = %+v, identity = %+v; want %s as seen by %s", list.Caller, list.Identity, tt.p.ARN, testServerID)
			}
		}
	}
	all, err := fetch(lenient, nil)
	if err != nil || !slices.Contains(names(all), "admins") || !slices.Contains(names(all), "devs") || all.Caller != nil {
		t.Errorf("without identity, lenient server: %v, %v; want every target and no caller", names(all), err)
	}
	_, err = fetch(strict, nil)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "requires a verified caller identity, and the connection carries none. ") {
		t.Errorf("without identity, strict server: err = %v, want 401 with a sentence", err)
	}
	challenges := counterValue(t, reg, "rdsproxy_identity_checks_total", "result", "identity-challenge")
	if missing := counterValue(t, reg, "rdsproxy_identity_checks_total", "result", "identity-missing"); challenges < 1 || missing != 0 {
		t.Errorf("identity checks: %v identity-challenge, %v identity-missing; want the requests without one counted as challenges", challenges, missing)
	}
}
