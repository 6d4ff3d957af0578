package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// The ceiling of striping over N sessions: N raw connections at once over
// --ssm-sessions N, one per session, each a COPY out. A striped connection
// over N sessions can at best match what they carry together; on this
// machine the paced endpoint (1 KiB, then 1 ms, per session) shares the
// two cores with everything else, and its sleeps run late as the sessions
// multiply, so its per-session rate falls below one idle session's.

// ceilingSessions is N.
const ceilingSessions = 8

// ssmCeiling measures N raw connections' COPY out at once, mb MiB each,
// and prints their sum beside the striped connection over as many
// sessions (stripe-8 in res, if it ran).
func (b *bench) ssmCeiling(dir, bin, serverPort string, mb int, res map[string]*ssmResult) error {
	p := &ssmPath{name: fmt.Sprintf("ceiling-%d", ceilingSessions),
		args: []string{"--ssm-sessions", fmt.Sprint(ceilingSessions), "--no-ssm-striping"}}
	if err := b.startSSMPath(dir, bin, "", serverPort, p); err != nil {
		return fmt.Errorf("ssm ceiling: %w", err)
	}
	defer p.proc.stop()
	conns := make([]*pgx.Conn, ceilingSessions)
	for i := range conns {
		c, err := b.ssmConnect(p, fmt.Sprint("copy-", i))
		if err != nil {
			return fmt.Errorf("ssm ceiling: connection %d: %w", i, err)
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	sql := generatedRows(mb << 20 / 100)
	var g errgroup.Group
	rates := make([]float64, len(conns)) // each connection's own MB/s: a slow one does not lower the others'
	for i, c := range conns {
		g.Go(func() error {
			var out counted
			start := time.Now()
			_, err := c.PgConn().CopyTo(context.Background(), &out, sql)
			rates[i] = float64(out.n.Load()) / (1 << 20) / time.Since(start).Seconds()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("ssm ceiling: COPY out: %w", err)
	}
	var sum float64
	for _, r := range rates {
		sum += r
	}
	fmt.Printf("\nSSM ceiling: %d raw connections at once over --ssm-sessions %d --no-ssm-striping, a COPY out of %d MiB each, one run:\n",
		ceilingSessions, ceilingSessions, mb)
	fmt.Printf("together %.2f MB/s (the sum of each one's rate), %.3f MB/s per session", sum, sum/ceilingSessions)
	if s, ok := res[fmt.Sprintf("stripe-%d", ceilingSessions)]; ok {
		fmt.Printf("; stripe-%d's one connection %.2f MB/s, %.2f of the ceiling", ceilingSessions, s.copyOut.mbps, s.copyOut.mbps/sum)
	}
	fmt.Println()
	return nil
}
