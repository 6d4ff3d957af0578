package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// state is what the client remembers between runs, in the user's state
// directory: the local port each target of each server was served on (so
// GUI clients keep working after a restart) and the names of the last
// target list (for shell completion). Ports are kept per server: prod and
// staging may both have a target "app", and a GUI connection saved for
// one must not silently reach the other.
type state struct {
	Ports   map[string]map[string]int `json:"ports_by_server"` // server key → target → port
	Targets []string                  `json:"targets"`
	// Served is what connect printed for each target it served, for
	// rdsproxy env: the last time, and the last few listeners (several
	// connects may serve one target on ports of their own, and the last
	// one started may have stopped while another serves on).
	Served map[string]map[string]connInfo   `json:"served_by_server,omitempty"` // server key → target → details
	Recent map[string]map[string][]connInfo `json:"recent_by_server,omitempty"` // the same, newest first
}

// recentServed bounds the listeners remembered per target.
const recentServed = 4

// stateStore reads and writes state.json; safe for concurrent use.
type stateStore struct {
	path string
	mu   sync.Mutex
}

// newStateStore uses $RDSPROXY_STATE_DIR, else $XDG_STATE_HOME/rdsproxy,
// else ~/.local/state/rdsproxy.
func newStateStore() *stateStore {
	dir := os.Getenv("RDSPROXY_STATE_DIR")
	if dir == "" {
		base := os.Getenv("XDG_STATE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".local", "state")
		}
		dir = filepath.Join(base, "rdsproxy")
	}
	return &stateStore{path: filepath.Join(dir, "state.json")}
}

// dir is the state directory.
func (s *stateStore) dir() string { return filepath.Dir(s.path) }

func (s *stateStore) load() (state, error) {
	st := state{Ports: map[string]map[string]int{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return state{Ports: map[string]map[string]int{}}, fmt.Errorf("state file %s: %w", s.path, err)
	}
	if st.Ports == nil {
		st.Ports = map[string]map[string]int{}
	}
	return st, nil
}

func (s *stateStore) update(change func(*state)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	change(&st)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(s.path, b, 0o600)
}

// port is the remembered port of a server's target, or 0.
func (s *stateStore) port(server, target string) int {
	st, err := s.load()
	if err != nil {
		return 0
	}
	return st.Ports[server][target]
}

func (s *stateStore) rememberPort(server, target string, port int) error {
	return s.update(func(st *state) {
		if st.Ports[server] == nil {
			st.Ports[server] = map[string]int{}
		}
		st.Ports[server][target] = port
	})
}

// rememberServed keeps what connect printed for a target of server.
func (s *stateStore) rememberServed(server string, ci connInfo) error {
	return s.update(func(st *state) {
		recent := st.Recent[server][ci.Target]
		if old, ok := st.Served[server][ci.Target]; ok && len(recent) == 0 {
			recent = []connInfo{old} // a state file from before the list: that connect may still serve
		}
		others := slices.DeleteFunc(recent, func(o connInfo) bool { return o.Host == ci.Host && o.Port == ci.Port })
		setIn(&st.Served, server, ci.Target, ci)
		setIn(&st.Recent, server, ci.Target, append([]connInfo{ci}, others[:min(len(others), recentServed-1)]...))
	})
}

// setIn sets m[outer][inner] = v, making the maps it needs.
func setIn[V any](m *map[string]map[string]V, outer, inner string, v V) {
	if *m == nil {
		*m = map[string]map[string]V{}
	}
	if (*m)[outer] == nil {
		(*m)[outer] = map[string]V{}
	}
	(*m)[outer][inner] = v
}

// servedRecently is what connect printed for a target of server, newest
// first: the listeners it may still serve on.
func (s *stateStore) servedRecently(server, target string) ([]connInfo, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	if recent := st.Recent[server][target]; len(recent) > 0 {
		return recent, nil
	}
	if ci, ok := st.Served[server][target]; ok { // a state file from before the list
		return []connInfo{ci}, nil
	}
	return nil, nil
}

func (s *stateStore) rememberTargets(names []string) error {
	return s.update(func(st *state) { st.Targets = slices.Clone(names) })
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so readers (and concurrent writers) never see a partial file.
func writeFileAtomic(path string, b []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
