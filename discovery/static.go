package discovery

// Static returns t as a static target, one the server's configuration
// names rather than one found in RDS: its Source is "static", and an
// empty Auth or TLS takes what a discovered database gets (IAM
// authentication, verify-full TLS). Validate it before use.
func Static(t Target) Target {
	t.Source = "static"
	if t.Auth == "" {
		t.Auth = AuthIAM
	}
	if t.TLS == "" {
		t.TLS = TLSVerifyFull
	}
	return t
}
