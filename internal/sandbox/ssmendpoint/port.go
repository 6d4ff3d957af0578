package ssmendpoint

import (
	"io"
	"net"
	"time"

	"github.com/xtaci/smux"
)

const agentReadSize = 1024 // the agent reads (and sends) at most 1 KiB at a time

// send sends data as Output messages of ≤ 1 KiB, sleeping 1 ms after each
// unless unpaced (the real agent's pump, §9.6). A paused agent (client
// away) waits.
func (a *agent) send(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if err := a.waitOnline(); err != nil {
			return n, err
		}
		end := min(len(b), n+agentReadSize)
		if err := a.st.send(ptOutput, b[n:end]); err != nil {
			return n, err
		}
		n = end
		if !a.e.cfg.Unpaced {
			time.Sleep(time.Millisecond)
		}
	}
	return n, nil
}

// muxConn is the byte stream under the agent's smux server.
type muxConn struct{ a *agent }

func (c muxConn) Read(b []byte) (int, error)  { return c.a.in.Read(b) }
func (c muxConn) Write(b []byte) (int, error) { return c.a.send(b) }
func (c muxConn) Close() error                { c.a.in.close(); return nil }

// serveMux is the smux server: per accepted stream, dial the destination
// and copy both ways (§9.3).
func (a *agent) serveMux() {
	cfg := smux.DefaultConfig()
	cfg.Version = 1
	cfg.KeepAliveDisabled = a.mode.keepAliveDisabled
	sess, err := smux.Server(muxConn{a}, cfg)
	if err != nil {
		a.end(endReason{output: "smux: " + err.Error()})
		return
	}
	defer sess.Close()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); <-a.ctx.Done(); sess.Close() }()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if a.ctx.Err() == nil {
				a.end(endReason{output: "smux session ended: " + err.Error()})
			}
			return
		}
		a.e.stats.streams.Add(1)
		a.e.countStream(a.rec.target)
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.serveStream(st) }()
	}
}

func (a *agent) serveStream(st *smux.Stream) {
	defer st.Close()
	dest, err := a.dial()
	if err != nil {
		a.log.Info("agent: dial destination failed", "err", err)
		_ = a.st.send(ptFlag, flagPayload(flagConnectToPortError))
		return
	}
	defer dest.Close()
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		_, _ = io.Copy(dest, st)
		dest.Close()
	}()
	_, _ = io.Copy(st, dest)
	st.Close()
	dest.Close()
	<-stop
}

// serveBasic is basic mode (§9.4): one destination connection dialed at
// session start; DisconnectToPort closes it and the next Output re-dials;
// when the destination closes, the agent waits for client data to re-dial.
func (a *agent) serveBasic() {
	var dest net.Conn
	var destDone chan struct{} // closed when dest's pump ended (destination closed)
	var pumps []chan struct{}
	defer func() {
		if dest != nil {
			dest.Close()
		}
		for _, p := range pumps {
			<-p
		}
	}()
	connect := func() bool {
		c, err := a.dial()
		if err != nil {
			a.end(endReason{output: "Unable to start port forwarding: " + err.Error()})
			return false
		}
		dest, destDone = c, make(chan struct{})
		pumps = append(pumps, destDone)
		go func(done chan struct{}) { defer close(done); a.pumpToClient(c) }(destDone)
		return true
	}
	disconnect := func() {
		if dest != nil {
			dest.Close()
			dest = nil
		}
	}
	if !connect() {
		return
	}
	for {
		it, ok := a.in.next()
		if !ok {
			return
		}
		if it.flag == flagDisconnectToPort {
			disconnect()
			continue
		}
		if dest != nil && isClosed(destDone) {
			disconnect() // the destination closed: re-dial on this data
		}
		if dest == nil && !connect() {
			return
		}
		if _, err := dest.Write(it.data); err != nil {
			disconnect()
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (a *agent) pumpToClient(c net.Conn) {
	buf := make([]byte, agentReadSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, serr := a.send(buf[:n]); serr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
