package server

// unsentLimit bounds the bytes that a client's socket keeps queued in the
// kernel but not yet sent (TCP_NOTSENT_LOWAT, where the system has it).
// Without it Linux grows the queue toward a slow reader to the 4 MiB of
// net.ipv4.tcp_wmem: toward the SSM agent, which forwards about 1 MB/s, a
// client that cancels a flood of rows or notices then waits 4 s for what
// was queued before the cancel (psql's Ctrl-C over --via ssm took 11 s in
// the sandbox, 6 s with the limit; what is queued upstream the relay sets
// aside and drops, see relay.Session.CancelSent). Bytes in flight are not
// counted, so a long network keeps its window: the limit only makes the
// relay write later, when the queue is short.
const unsentLimit = 128 << 10
