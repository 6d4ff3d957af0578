package client

import (
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
