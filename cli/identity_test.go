package cli

import "testing"

// The server asks STS in its own region (the AWS configuration's, which
// the Terraform modules set to the region of their sts VPC endpoint),
// not in the first region it discovers in.
func TestSTSRegion(t *testing.T) {
	home := func() string { return "eu-west-1" }
	none := func() string { return "" }
	for _, tt := range []struct {
		name, flag string
		regions    []string
		config     func() string
		want       string
	}{
		{"the flag", "ap-south-1", []string{"us-west-2"}, home, "ap-south-1"},
		{"where the server runs, before other discovery regions", "", []string{"us-west-2", "eu-west-1"}, home, "eu-west-1"},
		{"the first discovery region without an AWS region", "", []string{"us-west-2", "eu-west-1"}, none, "us-west-2"},
		{"nothing", "", nil, none, "us-east-1"},
	} {
		if got := stsRegion(tt.flag, tt.regions, tt.config); got != tt.want {
			t.Errorf("%s: stsRegion = %s, want %s", tt.name, got, tt.want)
		}
	}
}
