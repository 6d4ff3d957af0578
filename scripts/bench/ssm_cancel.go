package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Ctrl-C during a flood: psql runs floodSQL for floodFor, then gets SIGINT
// (Ctrl-C), which makes it send a cancel; the time from the signal to
// psql's exit is measured ctrlCReps times. Over SSM the flood fills every
// buffer on the way, which the agent's pace drains slowly; the server
// drops what the database sent before its answer to the cancel.
const (
	floodSQL  = "DO $$ BEGIN LOOP RAISE NOTICE '%', repeat('x', 1000); END LOOP; END $$"
	floodFor  = 3 * time.Second
	ctrlCReps = 3
)

// ssmCtrlC measures Ctrl-C through p.
func (b *bench) ssmCtrlC(p *ssmPath) ([]time.Duration, error) {
	return ctrlC(b.ssmPGEnv(p, "ctrl-c"))
}

// ctrlC runs the flood ctrlCReps times with env and returns the time from
// each Ctrl-C to psql's exit.
func ctrlC(env []string) ([]time.Duration, error) {
	var took []time.Duration
	for range ctrlCReps {
		var stderr strings.Builder
		cmd := exec.Command(pgBin("psql"), "-X", "-q", "-c", floodSQL)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = &stderr // the notices, then the cancel's error
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("psql: %w", err)
		}
		time.Sleep(floodFor)
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		took = append(took, time.Since(start))
		if !strings.Contains(stderr.String(), "canceling statement due to user request") {
			tail := stderr.String()[max(0, stderr.Len()-300):]
			return nil, fmt.Errorf("psql's Ctrl-C did not cancel the flood: %s", tail)
		}
	}
	return took, nil
}
