package main

import (
	"context"
	"fmt"
	"time"
)

// directProbe is the anchor of the SSM table's "select 1 during the
// accounts COPY": the same probes beside the same COPY over a direct TLS
// connection to the emulator, no SSM and no rdsproxy. The COPY then runs as
// fast as the two cores allow, so the probes' slowdown is a lower bound of
// what a busy machine costs them: an SSM path's probe also crosses both
// proxies, zstd and the agent, each busy with the COPY. It also times
// psql's Ctrl-C in a flood of notices (ssm_cancel.go) over the same
// direct connection.
func (b *bench) directProbe(direct path, rows int64) error {
	ctx := context.Background()
	probe, err := b.connect(direct)
	if err != nil {
		return fmt.Errorf("direct probe: %w", err)
	}
	defer probe.Close(ctx)
	acc, err := b.connect(direct)
	if err != nil {
		return fmt.Errorf("direct probe: %w", err)
	}
	defer acc.Close(ctx)
	idle, err := probeIdle(probe, 20)
	if err != nil {
		return fmt.Errorf("direct probe: %w", err)
	}
	start := time.Now()
	during, n, err := probeDuringCopy(acc, probe, accountsRows(rows))
	if err != nil {
		return fmt.Errorf("direct probe: %w", err)
	}
	mbps := float64(n) / (1 << 20) / time.Since(start).Seconds()
	i, d := quantile(idle, 0.5), quantile(during, 0.5)
	fmt.Printf("\nAnchor, direct TLS (no SSM, no proxy), the same probes beside the same COPY at %.0f MB/s: select 1 idle %.2f ms, during %.2f ms (%d probes), %.2f× idle\n",
		mbps, millis(i), millis(d), len(during), float64(d)/float64(i))
	took, err := ctrlC(b.pgEnv(direct))
	if err != nil {
		return fmt.Errorf("direct Ctrl-C: %w", err)
	}
	fmt.Printf("Anchor, direct TLS: Ctrl-C in a notice flood to psql's exit, median of %d: %.1f ms\n", ctrlCReps, millis(quantile(took, 0.5)))
	return nil
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
