package server_test

import (
	"errors"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/discovery"
	"github.com/rdsproxy/rdsproxy/server"
)

type noTargets struct{}

func (noTargets) Current() *discovery.Snapshot { return nil }

// Validate reads zero fields as their defaults, names the field it
// cannot use, and changes nothing.
func TestConfigValidate(t *testing.T) {
	roots, err := server.RootCAs(nil)
	if err != nil {
		t.Fatal(err)
	}
	base := func() server.Config { return server.Config{Targets: noTargets{}, RootCAs: roots} }
	tests := []struct {
		name  string
		edit  func(*server.Config)
		field string // "" means valid
	}{
		{"zero values are the defaults", func(*server.Config) {}, ""},
		{"no targets", func(c *server.Config) { c.Targets = nil }, "Targets"},
		{"no roots", func(c *server.Config) { c.RootCAs = nil }, "RootCAs"},
		{"TLS required without a certificate", func(c *server.Config) { c.RequireTLS = true }, "RequireTLS"},
		{"negative sessions", func(c *server.Config) { c.MaxSessions = -1 }, "MaxSessions"},
		{"negative drain", func(c *server.Config) { c.DrainTimeout = -time.Second }, "DrainTimeout"},
		{"tiny startup size", func(c *server.Config) { c.MaxStartupSize = 4 }, "MaxStartupSize"},
		{"startup size that refuses JDBC", func(c *server.Config) { c.MaxStartupSize = 1023 }, "MaxStartupSize"},
		{"smallest startup size", func(c *server.Config) { c.MaxStartupSize = 1024 }, ""},
		{"startup size that refuses identities", func(c *server.Config) {
			c.MaxStartupSize, c.Identity = 8023, &server.IdentityConfig{ServerID: "s", Region: "eu-west-1"}
		}, "MaxStartupSize"},
		{"smallest startup size with identity", func(c *server.Config) {
			c.MaxStartupSize, c.Identity = 8024, &server.IdentityConfig{ServerID: "s", Region: "eu-west-1"}
		}, ""},
		{"dial beyond the default login timeout", func(c *server.Config) { c.DialTimeout = time.Minute }, "DialTimeout"},
		{"dial within a longer login timeout", func(c *server.Config) { c.DialTimeout, c.LoginTimeout = time.Minute, 2*time.Minute }, ""},
		{"override without a port", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example": "127.0.0.1:5432"} }, "DialOverrides"},
		{"override to no port", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:5432": "127.0.0.1"} }, "DialOverrides"},
		{"override to port 0", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:5432": "127.0.0.1:0"} }, "DialOverrides"},
		{"override to a port past 65535", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:5432": "127.0.0.1:70000"} }, "DialOverrides"},
		{"override to no host", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:5432": ":5432"} }, "DialOverrides"},
		{"override from a port past 65535", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:70000": "127.0.0.1:5432"} }, "DialOverrides"},
		{"override", func(c *server.Config) { c.DialOverrides = map[string]string{"db.example:5432": "10.0.0.7:6432"} }, ""},
		{"negative login budget", func(c *server.Config) { c.AuthFailures.PerKey = -1 }, "AuthFailures"},
		{"identity without a server id", func(c *server.Config) { c.Identity = &server.IdentityConfig{Region: "eu-west-1"} }, "Identity.ServerID"},
		{"identity with a bad endpoint", func(c *server.Config) {
			c.Identity = &server.IdentityConfig{ServerID: "s", Region: "eu-west-1", Endpoint: "ftp://sts"}
		}, "Identity.Endpoint"},
		{"identity", func(c *server.Config) { c.Identity = &server.IdentityConfig{ServerID: "s", Region: "eu-west-1"} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.edit(&cfg)
			before := cfg
			err := cfg.Validate()
			var ce *server.ConfigError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field):
				t.Fatalf("Validate: %v; want a ConfigError for %s", err, tt.field)
			}
			if cfg.MaxSessions != before.MaxSessions || cfg.Logger != before.Logger || cfg.Now != nil ||
				(cfg.Identity != nil && (cfg.Identity.Endpoint != before.Identity.Endpoint || cfg.Identity.HTTP != nil)) {
				t.Fatalf("Validate changed the configuration")
			}
		})
	}
}
