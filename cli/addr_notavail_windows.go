package cli

import "golang.org/x/sys/windows"

// errAddrNotAvail is the error a listen on an address this machine does
// not have fails with.
const errAddrNotAvail = windows.WSAEADDRNOTAVAIL
