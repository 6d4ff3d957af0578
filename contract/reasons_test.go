package contract

import "testing"

func TestReasonOf(t *testing.T) {
	tests := []struct {
		routine, reason string
		ours            bool
	}{
		{Routine(ReasonUnknownTarget), ReasonUnknownTarget, true},
		{"auth_failed", "", false}, // PostgreSQL's own
		{"", "", false},
	}
	for _, tt := range tests {
		if reason, ours := ReasonOf(tt.routine); reason != tt.reason || ours != tt.ours {
			t.Errorf("ReasonOf(%q) = %q, %v; want %q, %v", tt.routine, reason, ours, tt.reason, tt.ours)
		}
	}
}
