//go:build !linux && !darwin

package server

import "net"

// limitUnsent: the option is set on Linux and macOS only.
func limitUnsent(net.Conn) {}
