//go:build !windows

package cli

import "syscall"

// errAddrNotAvail is the error a listen on an address this machine does
// not have fails with.
const errAddrNotAvail = syscall.EADDRNOTAVAIL
