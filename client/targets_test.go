package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rdsproxy/rdsproxy/contract"
)

// An unknown target names the close matches, or lists what the server serves.
func TestFindTarget(t *testing.T) {
	targets := []contract.Target{{Name: "orders"}, {Name: "orders.eu-west-1"}, {Name: "analytics"}, {Name: "analytics-ro"}}
	tests := []struct{ name, want string }{
		{"orders", ""},
		{"order", `did you mean orders, orders.eu-west-1?`},
		{"analytcs", `did you mean analytics?`},
		{"billing", `it serves: orders, orders.eu-west-1, analytics, analytics-ro`},
	}
	for _, tt := range tests {
		got, err := FindTarget(targets, tt.name)
		if tt.want == "" {
			if err != nil || got.Name != tt.name {
				t.Errorf("FindTarget(%q) = %q, %v", tt.name, got.Name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FindTarget(%q) error = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

// A port that answers HTTP without being the server's --listen (its
// --admin-addr, say) gets the 404 with a question that points at the
// mistake, not only "404 page not found".
func TestTargetsFromAnHTTPServerThatIsNotOne(t *testing.T) {
	admin := httptest.NewServer(http.NotFoundHandler())
	defer admin.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", admin.Listener.Addr().String())
	}}}
	_, err := getTargets(context.Background(), hc, "")
	want := "the rdsproxy server answered 404 Not Found: 404 page not found (this port answers HTTP but serves no target list: is it the server's --admin-addr rather than its --listen address?)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// A server that cannot serve its list yet answers 503, with rdsproxy's
// reason when it has one: the error carries both, for doctor to say what
// to do.
func TestTargetsRefusedCarriesStatusAndReason(t *testing.T) {
	for _, tt := range []struct{ body, reason string }{
		{"target list not loaded yet\n", ""},
		{`{"error":"rdsproxy: cannot verify the caller identity: AWS STS is unreachable or failing","reason":"identity-sts-unreachable"}`, "identity-sts-unreachable"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, tt.body, http.StatusServiceUnavailable)
		}))
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", srv.Listener.Addr().String())
		}}}
		_, err := getTargets(context.Background(), hc, "")
		srv.Close()
		var lr *ListRefused
		if !errors.As(err, &lr) || lr.Status != http.StatusServiceUnavailable || lr.Reason != tt.reason || !strings.HasPrefix(err.Error(), "the rdsproxy server answered 503") {
			t.Errorf("answer %q: err %v (%+v), want a ListRefused 503 with reason %q", tt.body, err, lr, tt.reason)
		}
	}
}
