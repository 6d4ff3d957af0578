package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/rdsproxy/rdsproxy/contract"
)

// ListCmd prints the targets a server serves.
type ListCmd struct {
	TunnelFlags
	JSON bool `help:"Print JSON (the server's GET /v1/targets body)."`
}

// Run fetches and prints the target list.
func (c *ListCmd) Run(ctx context.Context, g *Globals, log *slog.Logger, env Env) error {
	r, err := c.dial(ctx, log, env, g.Quiet)
	if err != nil {
		return err
	}
	defer r.Close()
	targets := r.targets
	if c.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(contract.TargetList{Targets: targets})
	}
	printTable(env, targets)
	return nil
}

func printTable(env Env, targets []contract.Target) {
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tENGINE\tROLE\tREGION\tDATABASE\tUSERS\tREAD-ONLY\tENDPOINT")
	for _, t := range targets {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", t.Name, dash(t.Engine), dash(t.Role), dash(t.Region),
			dash(t.Database), dash(strings.Join(t.Users, ",")), t.ReadOnly, t.Endpoint)
	}
	w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
