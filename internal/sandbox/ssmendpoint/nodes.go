package ssmendpoint

// node is a managed node the endpoint knows: the instance an agent runs on.
type node struct {
	id   string
	lost bool   // its agent stopped reporting: ConnectionLost, TargetNotConnected
	dest string // where its agent forwards port sessions ("": the document's host:portNumber, or Config.Dest)
	// streams counts the port-forwarding streams its agent accepted.
	streams int64
}

// initNodes builds the node list from Targets and ConnectionLost, in that
// order (DescribeInstanceInformation lists them so).
func (e *Endpoint) initNodes() {
	add := func(id string, lost bool) {
		if n := e.nodeLocked(id); n != nil {
			n.lost = n.lost || lost
			return
		}
		e.nodes = append(e.nodes, &node{id: id, lost: lost})
	}
	for _, id := range e.cfg.Targets {
		add(id, false)
	}
	for _, id := range e.cfg.ConnectionLost {
		add(id, true)
	}
}

// nodeLocked finds a node; e.mu must be held.
func (e *Endpoint) nodeLocked(id string) *node {
	for _, n := range e.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// TargetConnected reports whether id is a node whose agent is connected
// (Online).
func (e *Endpoint) TargetConnected(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.nodeLocked(id)
	return n != nil && !n.lost
}

// AddTarget connects a managed node, as when a new instance's agent
// registers: StartSession accepts it and DescribeInstanceInformation lists
// it Online. Its agent forwards port sessions to dest, whatever port the
// session asks for (an instance whose server listens there); empty dest
// keeps the document's destination.
func (e *Endpoint) AddTarget(id, dest string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.nodeLocked(id)
	if n == nil {
		n = &node{id: id}
		e.nodes = append(e.nodes, n)
	}
	n.lost, n.dest = false, dest
}

// DisconnectTarget is the node's agent going away with its instance
// (terminated, stopped): its sessions end abruptly, their websockets
// dropping without channel_closed, and ResumeSession hands out no token for
// them; StartSession on it fails with TargetNotConnected and
// DescribeInstanceInformation lists it ConnectionLost. It returns how many
// live sessions ended.
func (e *Endpoint) DisconnectTarget(id string) int {
	e.mu.Lock()
	if n := e.nodeLocked(id); n != nil {
		n.lost = true
	}
	var agents []*agent
	n := 0
	for _, r := range e.sessions {
		if r.target != id || r.terminated {
			continue
		}
		r.terminated = true
		n++
		if r.agent != nil {
			agents = append(agents, r.agent)
		}
	}
	e.mu.Unlock()
	for _, a := range agents {
		a.end(endReason{silent: true})
	}
	return n
}

// TargetStreams is how many port-forwarding streams the agent on id
// accepted.
func (e *Endpoint) TargetStreams(id string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := e.nodeLocked(id); n != nil {
		return n.streams
	}
	return 0
}

// countStream counts a stream the agent on id accepted.
func (e *Endpoint) countStream(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := e.nodeLocked(id); n != nil {
		n.streams++
	}
}

// nodeDest is where the agent on id forwards port sessions ("": no
// override).
func (e *Endpoint) nodeDest(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := e.nodeLocked(id); n != nil {
		return n.dest
	}
	return ""
}
