package pgwire

import (
	"fmt"
	"io"
	"net"
	"time"
)

// SendCancel writes a CancelRequest for key on c and, as libpq does,
// waits until the far end closes c or the deadline passes: once the
// server has closed it, the cancel has been processed. It does not close c.
func SendCancel(c net.Conn, key CancelKey, deadline time.Time) error {
	c.SetDeadline(deadline)
	if _, err := c.Write(AppendCancel(nil, key)); err != nil {
		return fmt.Errorf("send CancelRequest: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(c, 1<<10))
	return nil
}
