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

// Run prints the exports from what connect printed for the target: the
// newest listener that accepts a connection now, else the newest one (a
// connect started again serves on the same port), with a warning on
// stderr that nothing listens there now. It needs no tunnel and no
// credentials.
func (c *EnvCmd) Run(env Env) error {
	recent, err := newStateStore().servedRecently(c.serverKey(), c.Target)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	if len(recent) == 0 {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf(
			"rdsproxy connect has not served %s from this server yet: run `rdsproxy connect %s` (with the same --use or --via flags) first",
			c.Target, c.Target)}
	}
	ci, listening := recent[0], false
	for _, r := range recent {
		if listens(r) {
			ci, listening = r, true
			break
		}
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
	if !listening {
		fmt.Fprintf(env.Stderr, "rdsproxy: nothing listens on %s now: start `rdsproxy connect %s`\n", ci.addr(), c.Target)
	}
	return nil
}

// listens reports whether something accepts connections where ci says.
func listens(ci connInfo) bool {
	conn, err := net.DialTimeout("tcp", ci.addr(), 2*time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// shellQuote quotes s for sh, bash and zsh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
