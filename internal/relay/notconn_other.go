//go:build !windows

package relay

import "syscall"

// errNotConnected is what a half-close of a socket whose peer has gone
// returns.
const errNotConnected = syscall.ENOTCONN
