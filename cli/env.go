package cli

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// EnvCmd prints shell exports that point libpq programs (psql, pg_dump,
// …) at a target that rdsproxy connect serves, like `tsh db env`.
type EnvCmd struct {
	Target string `arg:"" name:"target" help:"Target name, as served by rdsproxy connect (now, or last time) from this server."`
	TunnelFlags
	User string `help:"Database user (default: the one connect printed)." env:"RDSPROXY_USER"`
}

// Run prints the exports from what connect last printed for the target;
// it needs no tunnel and no credentials. A warning on stderr says when
// nothing listens there now.
func (c *EnvCmd) Run(env Env) error {
	ci, ok, err := newStateStore().served(c.serverKey(), c.Target)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	if !ok {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf(
			"rdsproxy connect has not served %s from this server yet: run `rdsproxy connect %s` (with the same --use or --via flags) first",
			c.Target, c.Target)}
	}
	if c.User != "" {
		ci.User = c.User
	}
	vars := [][2]string{{"PGHOST", ci.Host}, {"PGPORT", strconv.Itoa(ci.Port)}, {"PGUSER", ci.User},
		{"PGDATABASE", ci.DB}, {"PGSSLMODE", ci.SSLMode}}
	if ci.SSLRootCert != "" {
		vars = append(vars, [2]string{"PGSSLROOTCERT", ci.SSLRootCert})
	}
	for _, v := range vars {
		fmt.Fprintf(env.Stdout, "export %s=%s\n", v[0], shellQuote(v[1]))
	}
	addr := net.JoinHostPort(ci.Host, strconv.Itoa(ci.Port))
	if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		fmt.Fprintf(env.Stderr, "rdsproxy: nothing listens on %s now: start `rdsproxy connect %s`\n", addr, c.Target)
	} else {
		conn.Close()
	}
	return nil
}

// shellQuote quotes s for sh, bash and zsh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
