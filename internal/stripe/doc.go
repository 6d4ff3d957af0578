// Package stripe carries one byte stream (one PostgreSQL connection) over K
// ordered byte streams, the stripes, each of which may run at its own speed:
// over AWS SSM every session is capped, so a connection spread over several
// SSM sessions moves K times the bytes. Payloads are optionally compressed
// with zstd. Both ends of a stripe are this package; docs/architecture.md
// (the striping section) shows where the stripes come from and how they join.
//
// # Wire format
//
// Each direction is a sequence of frames, numbered from 0 per direction and
// spread over the stripes. Every frame is a 12-byte big-endian header and a
// payload:
//
//	seq    uint64  per direction, starts at 0, +1 per frame
//	flags  uint8   bit0: payload is zstd-compressed; bit1: END (the sender
//	               half-closed; END frames have an empty payload)
//	length uint24  payload bytes on the wire, at most maxWire
//
// A payload decompresses to at most 256 KiB; the decoder is bounded so that a
// frame that declares or expands to more is a protocol error and allocates no
// more than that bound. An empty frame without END, a seq already seen, a seq
// after the END frame, a second END, or a compressed frame to a receiver
// without a Codec is a protocol error.
//
// # Sending
//
// Write cuts its bytes into chunks of at most Options.MaxChunk, gives each the
// next seq, compresses it when that pays (adaptively, see compressor), and
// queues it on the stripe with the fewest bytes queued but not yet written,
// so small interactive messages take an idle stripe. One writer goroutine per
// stripe writes its queue in order, so the seqs on any one stripe increase.
//
// # Receiving, and why it cannot deadlock
//
// One reader goroutine per stripe reads frames and files them: the frame whose
// seq is the next one to deliver joins the in-order data Read returns (it
// waits only while that data is more than Options.MaxReorder, that is only on
// the application); any other frame is held out of order, and its reader
// blocks (on a condition variable, no polling) while the held bytes plus its
// own would exceed Options.MaxReorder. Each stripe carries increasing seqs, so
// the frame with the next seq is always at the head of some stripe, and the
// reader of that stripe never waits for room that only other stripes could
// free. Hence the held bytes are bounded and the next frame always arrives;
// a stripe that joins later may carry any seq from next on.
//
// When the END frame's seq is reached, Read returns io.EOF. A stripe that
// fails (I/O error, EOF inside a frame, EOF before both directions have
// ended, protocol error) fails the whole Conn: every stripe is closed and
// Reads and Writes return an error wrapping ErrStripeLost.
package stripe
