// Package stripe carries one byte stream (one PostgreSQL connection) over K
// ordered byte streams, the stripes, each of which may run at its own speed:
// over AWS SSM every session is capped, so a connection spread over several
// SSM sessions moves K times the bytes. Payloads are optionally compressed
// with zstd. Both ends of a stripe are this package; docs/architecture.md
// (the striping section) shows where the stripes come from and how they join.
//
// # Wire format
//
// Each direction is a sequence of frames spread over the stripes. Every
// frame is a 12-byte big-endian header and a payload:
//
//	seq    uint64  data and END frames: per direction, starts at 0, +1 per
//	               frame; CREDIT frames: always 0 (they take no seq)
//	flags  uint8   bit0: payload is zstd-compressed; bit1: END (the sender
//	               half-closed; END frames have an empty payload); bit2:
//	               CREDIT (no other bit; the payload is 8 bytes)
//	length uint24  payload bytes on the wire, at most maxWire
//
// A data payload decompresses to at most 256 KiB; the decoder is bounded so
// that a frame that declares or expands to more is a protocol error and
// allocates no more than that bound. A CREDIT payload is a uint64: the
// charge (below) of the data frames the frame's sender has consumed in full
// so far in the other direction. An empty frame without END, a seq already seen, a
// seq after the END frame, a second END, a compressed frame to a receiver
// without a Codec, a CREDIT frame with a seq, other flags or another length,
// a credit for more bytes than were sent, or data beyond the window (see
// below) is a protocol error.
//
// # Sending
//
// Write cuts its bytes into chunks of at most Options.MaxChunk, gives each the
// next seq, compresses it when that pays (adaptively, see compressor), and
// queues it on the stripe with the fewest bytes queued but not yet written,
// so small interactive messages take an idle stripe. One writer goroutine per
// stripe writes its queue in order, so the seqs on any one stripe increase.
//
// # Flow control
//
// Each direction has a window of Options.Window bytes (default 2 MiB, at
// least 4*MaxChunk), counted in charges: a data frame's charge is its
// payload bytes before compression, but at least 1 KiB (what a frame costs
// the receiver whatever its size; counting bytes alone would let a peer
// sending one-byte frames make the receiver hold a thousand times its
// window). Write waits (honouring the write deadline, Close, CloseWrite and
// failure) while the charges it has queued minus the peer's credit, plus
// the next chunk's, would exceed it. The receiver counts the charges of the
// frames Read has returned in full and,
// each time that count has grown by Window/4 since the last CREDIT frame,
// queues a CREDIT frame carrying it on a stripe that pick chooses (without
// waiting for queue room or window, even after CloseWrite; not after the
// peer's END). Credits are cumulative, so the sender keeps the largest it
// has seen and their order across stripes does not matter; the stripe
// reader applies a CREDIT frame as it arrives. Once the application has
// read everything, the credit not yet sent is under Window/4, so the
// sender's outstanding bytes are under Window/4 and a chunk (at most
// Window/4) fits: the threshold cannot stall the sender (creditDue).
//
// Both ends must use the same Window; both ends of rdsproxy use the
// default. A receiver that holds frames charged more than Window+MaxChunk
// (in order but unread, or out of order) fails with "peer exceeded the flow-control
// window", so a peer that ignores credit cannot make it buffer without bound.
//
// # Receiving, and why it cannot deadlock
//
// One reader goroutine per stripe reads frames and files each at once: the
// frame whose seq is the next one to deliver joins the in-order data Read
// returns, with the held frames that follow it; any other frame is held out
// of order. A reader never waits for room: it blocks on nothing but its
// stripe's I/O. This matters because over SSM the stripes of different
// connections share sessions multiplexed with smux, whose receive buffer is
// per session: a stripe left unread stops its session for every stream on
// it, so a reader that waited for its own connection's reordering could
// stall another connection's next frame, and two connections could stall
// each other. Memory is bounded by the sender's window instead, and Write
// is the only place that waits for the peer's application.
//
// When the END frame's seq is reached, Read returns io.EOF. Once, after
// it, every stripe has ended cleanly, the peer reads nothing more (it
// closes its stripes only when it closes the Conn): Writes fail, a Write
// waiting for credit at once, while Read still returns what arrived. A stripe that
// fails (I/O error, EOF inside a frame, EOF before both directions have
// ended, protocol error) fails the whole Conn: every stripe is closed and
// Reads and Writes return an error wrapping ErrStripeLost.
package stripe
