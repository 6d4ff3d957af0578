package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// listenUnix listens on dir/.s.PGSQL.port, the name libpq looks for with
// host=dir and port. dir is created 0700 when missing, and refused when
// other users may enter it: the socket must be reachable by its owner
// only. A socket file left by a process that died is replaced; one that
// answers is in use.
func listenUnix(dir string, port int) (net.Listener, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--unix-socket: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("--unix-socket: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("--unix-socket %s is open to other users (mode %04o): chmod 700 it, or name a new directory", dir, info.Mode().Perm())
	}
	path := filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
	ln, err := net.Listen("unix", path)
	if err == nil {
		return ln, nil
	}
	if c, derr := net.Dial("unix", path); derr == nil {
		c.Close()
		return nil, fmt.Errorf("--unix-socket: %s is in use by another process", path)
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return nil, fmt.Errorf("--unix-socket: %w", err)
	}
	ln, err = net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--unix-socket: %w", err)
	}
	return ln, nil
}
