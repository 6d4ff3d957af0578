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
// directory: the local port each target was served on (so GUI clients
// keep working after a restart) and the names of the last target list
// (for shell completion).
type state struct {
	Ports   map[string]int `json:"ports"`
	Targets []string       `json:"targets"`
}

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

func (s *stateStore) load() (state, error) {
	st := state{Ports: map[string]int{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return state{Ports: map[string]int{}}, fmt.Errorf("state file %s: %w", s.path, err)
	}
	if st.Ports == nil {
		st.Ports = map[string]int{}
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
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// port is the remembered port of a target, or 0.
func (s *stateStore) port(target string) int {
	st, err := s.load()
	if err != nil {
		return 0
	}
	return st.Ports[target]
}

func (s *stateStore) rememberPort(target string, port int) error {
	return s.update(func(st *state) { st.Ports[target] = port })
}

func (s *stateStore) rememberTargets(names []string) error {
	return s.update(func(st *state) { st.Targets = slices.Clone(names) })
}
