package cli

import "errors"

// DoctorCmd checks, step by step, everything a connection needs.
// (Placeholder: replaced by the full implementation.)
type DoctorCmd struct {
	Target []string `arg:"" optional:"" name:"target" help:"Target to test a login to."`
	TunnelFlags
	User string `help:"Database user for the test login." env:"RDSPROXY_USER"`
}

// Run runs the checks.
func (c *DoctorCmd) Run() error { return errors.New("doctor: not implemented yet") }
