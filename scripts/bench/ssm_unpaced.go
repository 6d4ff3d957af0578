package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
)

// The pacing-off comparison (the issue: "with pacing off, no slower than
// today's raw stream"): the raw stream against striping, with and without
// compression, through a second SSM endpoint whose agent does not pace, to
// the same server. Without pacing the agent is no longer the bottleneck,
// so this measures what the transports themselves cost; its MB/s say
// nothing about real SSM.

// unpacedPaths are the paths compared without pacing, raw-1 (the anchor)
// first, with the flags of the paced comparison's paths of the same names.
func unpacedPaths(ssmURL string) []*ssmPath {
	var paths []*ssmPath
	for _, p := range ssmPaths() {
		if slices.Contains([]string{"raw-1", "stripe-4", "stripe-4-z"}, p.name) {
			p.ssmURL = ssmURL
			paths = append(paths, p)
		}
	}
	return paths
}

type unpacedResult struct{ copyOut, copyIn bulk }

// ssmUnpaced runs a COPY out and a COPY in of mb MiB through each unpaced
// path, one path after the other, and prints them.
func (b *bench) ssmUnpaced(dir, bin, serverPort string, srv *proc, mb int) error {
	fmt.Printf("\nSSM unpaced: a second endpoint with the agent's pacing off (Unpaced), same server; COPY out and in of %d MiB, one run each\n", mb)
	ep, err := ssmendpoint.Start(context.Background(), ssmendpoint.Config{Targets: []string{b.world.Instance}, Unpaced: true})
	if err != nil {
		return fmt.Errorf("unpaced ssm endpoint: %w", err)
	}
	defer ep.Close()
	paths := unpacedPaths(ep.URL())
	res := map[string]unpacedResult{}
	for _, p := range paths {
		r, err := b.unpacedRun(dir, bin, serverPort, p, srv, mb)
		if err != nil {
			return fmt.Errorf("ssm unpaced via %s: %w", p.name, err)
		}
		res[p.name] = r
	}
	printUnpaced(paths, res)
	return nil
}

// unpacedRun starts p's client, measures COPY out and in on one
// connection and stops the client.
func (b *bench) unpacedRun(dir, bin, serverPort string, p *ssmPath, srv *proc, mb int) (unpacedResult, error) {
	if err := b.startSSMPath(dir, bin, "", serverPort, p); err != nil {
		return unpacedResult{}, err
	}
	defer p.proc.stop()
	conn, err := b.ssmConnect(p, "bulk")
	if err != nil {
		return unpacedResult{}, err
	}
	defer conn.Close(context.Background())
	var r unpacedResult
	if r.copyOut, err = ssmCopyOut(conn, p, srv, mb); err != nil {
		return r, err
	}
	r.copyIn, err = ssmCopyIn(conn, p, srv, mb)
	return r, err
}

func printUnpaced(paths []*ssmPath, res map[string]unpacedResult) {
	fmt.Printf("\n%-46s", "SSM unpaced (one run)")
	for _, p := range paths {
		fmt.Printf(" %14s", p.name)
	}
	fmt.Println()
	anchor := res[paths[0].name]
	row := func(name string, f func(r unpacedResult) float64) {
		fmt.Printf("%-46s", name)
		for _, p := range paths {
			fmt.Printf(" %14s", strconv.FormatFloat(f(res[p.name]), 'f', 2, 64))
		}
		fmt.Println()
	}
	row("COPY out (MB/s)", func(r unpacedResult) float64 { return r.copyOut.mbps })
	row("  ÷ raw-1 (goal ≥ 1)", func(r unpacedResult) float64 { return r.copyOut.mbps / anchor.copyOut.mbps })
	row("COPY in (MB/s)", func(r unpacedResult) float64 { return r.copyIn.mbps })
	row("  ÷ raw-1 (goal ≥ 1)", func(r unpacedResult) float64 { return r.copyIn.mbps / anchor.copyIn.mbps })
	row("client process CPU ms/MB, COPY out", func(r unpacedResult) float64 { return r.copyOut.clientCPU * 1000 })
	row("client process CPU ms/MB, COPY in", func(r unpacedResult) float64 { return r.copyIn.clientCPU * 1000 })
	row("server process CPU ms/MB, COPY out", func(r unpacedResult) float64 { return r.copyOut.serverCPU * 1000 })
	row("server process CPU ms/MB, COPY in", func(r unpacedResult) float64 { return r.copyIn.serverCPU * 1000 })
	fmt.Println("client process: rdsproxy connect; server: the rdsproxy server; CPU from /proc/PID/stat utime+stime (10 ms ticks); MB = MiB of payload;\n" +
		"the SSM endpoint (agent) runs inside the bench process and its CPU is in neither column")
}
