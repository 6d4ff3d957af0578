package ssmendpoint

import (
	"bytes"
	"time"
)

// isAck reports whether a frame is an acknowledge message.
func isAck(f []byte) bool {
	return len(f) >= typeEnd && bytes.HasPrefix(f[typeStart:typeEnd], []byte("acknowledge "))
}

// roll decides what happens to one frame: drop, duplicate, hold (reorder:
// it goes out after the next frame) or pass.
func (a *agent) roll() (drop, dup, hold bool) {
	f := a.e.cfg.Faults
	r := a.rng.Float64() * 100
	switch {
	case r < f.DropPercent:
		return true, false, false
	case r < f.DropPercent+f.DuplicatePercent:
		return false, true, false
	case r < f.DropPercent+f.DuplicatePercent+f.ReorderPercent:
		return false, false, true
	}
	return false, false, false
}

// faultIn applies faults to a client frame and returns what to process.
// A held frame is released after the next frame; if none comes, the peers'
// retransmissions bring one.
func (a *agent) faultIn(f []byte) [][]byte {
	a.faultMu.Lock()
	defer a.faultMu.Unlock()
	drop, dup, hold := a.roll()
	var out [][]byte
	switch {
	case drop:
	case dup:
		out = append(out, f, bytes.Clone(f))
	case hold && a.heldIn == nil:
		a.heldIn = f
		return nil
	default:
		out = append(out, f)
	}
	if a.heldIn != nil {
		out = append(out, a.heldIn)
		a.heldIn = nil
	}
	return out
}

// writeOut is the agent stream's writer: faults, optional ack delay, then
// the websocket. The validator learns the ids of agent messages.
func (a *agent) writeOut(f []byte) error {
	a.val.sentByAgent(f)
	if isAck(f) && a.e.loseAck() {
		return nil
	}
	if d := a.e.cfg.Faults.AckDelay; d > 0 && isAck(f) {
		f = bytes.Clone(f)
		a.ackWG.Add(1)
		time.AfterFunc(d, func() {
			defer a.ackWG.Done()
			_ = a.writeWS(f)
		})
		return nil
	}
	a.faultMu.Lock()
	drop, dup, hold := a.roll()
	drop = drop && isAck(f) // the agent's data is never dropped (see Faults)
	var out [][]byte
	justHeld := false
	switch {
	case drop:
	case dup:
		out = append(out, f, f)
	case hold && a.heldOut == nil:
		a.heldOut, justHeld = bytes.Clone(f), true
	default:
		out = append(out, f)
	}
	if a.heldOut != nil && !justHeld {
		out = append(out, a.heldOut)
		a.heldOut = nil
	}
	a.faultMu.Unlock()
	for _, o := range out {
		if err := a.writeWS(o); err != nil {
			return err
		}
	}
	return nil
}
