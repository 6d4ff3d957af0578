package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

const maxTargetList = 16 << 20

// FetchTargetList asks the server for GET /v1/targets. When the server
// checks identity and ids is set, it asks again with the caller's
// identity (also after a 401), so that the list holds only the targets
// this caller may reach and Caller names the caller as the server sees it.
func FetchTargetList(ctx context.Context, tun tunnel.Tunnel, serverTLS *tls.Config, ids Identities) (contract.TargetList, error) {
	hc := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return DialServer(ctx, tun, serverTLS)
			},
			DisableKeepAlives:     true,
			ResponseHeaderTimeout: 30 * time.Second,
		},
	}
	list, err := getTargets(ctx, hc, "")
	if list.Identity == nil || ids == nil {
		return list, err
	}
	identity, serr := ids.Identity(ctx, *list.Identity, "")
	if serr != nil {
		return list, fmt.Errorf("sign the caller identity the rdsproxy server asks for: %w", serr)
	}
	return getTargets(ctx, hc, identity)
}

// getTargets does one GET /v1/targets, with identity when not empty. A
// refusal that says how to sign an identity returns it in the list.
func getTargets(ctx context.Context, hc *http.Client, identity string) (contract.TargetList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://rdsproxy"+contract.TargetsPath, nil)
	if err != nil {
		return contract.TargetList{}, err
	}
	if identity != "" {
		req.Header.Set(callerid.HTTPHeader, identity)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return contract.TargetList{}, fmt.Errorf("fetch target list from the rdsproxy server: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTargetList))
	if err != nil {
		return contract.TargetList{}, fmt.Errorf("read target list: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var refusal contract.Refusal
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &refusal) == nil && refusal.Error != "" {
			msg = refusal.Error
		}
		if resp.StatusCode == http.StatusNotFound && refusal.Error == "" {
			msg += " (this port answers HTTP but serves no target list: is it the server's --admin-addr rather than its --listen address?)"
		}
		return contract.TargetList{Identity: refusal.Identity},
			&ListRefused{Status: resp.StatusCode, Reason: refusal.Reason, msg: fmt.Sprintf("the rdsproxy server answered %s: %s", resp.Status, msg)}
	}
	var list contract.TargetList
	if err := json.Unmarshal(body, &list); err != nil {
		return contract.TargetList{}, fmt.Errorf("decode target list: %w", err)
	}
	return list, nil
}

// ListRefused is FetchTargetList's error when the server answered with
// another status than 200 OK.
type ListRefused struct {
	Status int    // the HTTP status
	Reason string // rdsproxy's reason, when the answer has one (identity-sts-unreachable, …)
	msg    string
}

func (e *ListRefused) Error() string { return e.msg }

// FindTarget picks name from targets, or says which names come close.
func FindTarget(targets []contract.Target, name string) (contract.Target, error) {
	for _, t := range targets {
		if t.Name == name {
			return t, nil
		}
	}
	if close := closeMatches(targets, name); len(close) > 0 {
		return contract.Target{}, fmt.Errorf("the server has no target %q; did you mean %s?", name, strings.Join(close, ", "))
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	return contract.Target{}, fmt.Errorf("the server has no target %q; it serves: %s", name, strings.Join(names, ", "))
}

// closeMatches returns names within edit distance 3 or sharing a prefix or
// substring with name, closest first.
func closeMatches(targets []contract.Target, name string) []string {
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	for _, t := range targets {
		d := editDistance(strings.ToLower(name), strings.ToLower(t.Name))
		if d <= 3 || strings.Contains(t.Name, name) || strings.Contains(name, t.Name) {
			cs = append(cs, cand{t.Name, d})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].d < cs[j].d || cs[i].d == cs[j].d && cs[i].name < cs[j].name })
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.name)
	}
	return out
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
