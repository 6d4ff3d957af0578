//go:build linux || darwin

package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/term"
)

// foreground moves the demo into a process group of its own and makes that
// the terminal's foreground group, so a Ctrl-C reaches the demo and what it
// started but not make, which would otherwise kill itself with the same
// SIGINT and exit 130 however cleanly the demo stopped. restore hands the
// terminal back to the group the demo came from. Off a terminal it does
// nothing.
func foreground() (restore func()) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return func() {}
	}
	var orig int32
	if ioctl(fd, syscall.TIOCGPGRP, &orig) != nil || syscall.Setpgid(0, 0) != nil {
		return func() {}
	}
	// A background group may set the foreground group only while it
	// ignores SIGTTOU, which would otherwise stop it.
	signal.Ignore(syscall.SIGTTOU)
	self := int32(syscall.Getpid())
	if ioctl(fd, syscall.TIOCSPGRP, &self) != nil {
		signal.Reset(syscall.SIGTTOU)
		return func() {}
	}
	return func() {
		ioctl(fd, syscall.TIOCSPGRP, &orig)
		signal.Reset(syscall.SIGTTOU)
	}
}

func ioctl(fd int, req uint, pgrp *int32) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(pgrp))); errno != 0 {
		return errno
	}
	return nil
}
