package server

import (
	"errors"
	"syscall"
)

// isResourceError reports errors that clear up when descriptors or memory
// free up, so accepting should pause rather than stop.
func isResourceError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}
