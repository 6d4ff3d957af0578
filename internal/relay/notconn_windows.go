package relay

import "syscall"

// errNotConnected is what a half-close of a socket whose peer has gone
// returns: Winsock's WSAENOTCONN, which syscall.ENOTCONN (a value Go
// invents on Windows) does not match.
const errNotConnected = syscall.Errno(10057)
