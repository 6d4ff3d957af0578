package discovery

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Snapshot is an immutable set of targets with O(1) lookups by name and by
// endpoint. The zero value is not usable; build one with NewSnapshot.
type Snapshot struct {
	targets    []Target // sorted by name
	byName     map[string]*Target
	byEndpoint map[string]*Target
	withheld   map[string]Withheld // by name: discovered databases not served
	built      time.Time
}

// NewSnapshot validates targets and indexes them. Names must be unique;
// callers resolve collisions before (see the discovery rules).
func NewSnapshot(targets []Target, built time.Time) (*Snapshot, error) {
	s := &Snapshot{
		targets:    slices.Clone(targets),
		byName:     make(map[string]*Target, len(targets)),
		byEndpoint: make(map[string]*Target, len(targets)),
		built:      built,
	}
	slices.SortFunc(s.targets, func(a, b Target) int { return strings.Compare(a.Name, b.Name) })
	for i := range s.targets {
		t := &s.targets[i]
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if _, dup := s.byName[t.Name]; dup {
			return nil, fmt.Errorf("two targets are named %q", t.Name)
		}
		s.byName[t.Name] = t
		key := normalizeEndpoint(t.Endpoint)
		if _, dup := s.byEndpoint[key]; !dup {
			s.byEndpoint[key] = t
		}
	}
	return s, nil
}

// Lookup finds a target by name, or by endpoint host:port, or by endpoint
// host alone when its port is 5432.
func (s *Snapshot) Lookup(ref string) (*Target, bool) {
	if t, ok := s.byName[ref]; ok {
		return t, true
	}
	if t, ok := s.byEndpoint[strings.ToLower(ref)]; ok {
		return t, true
	}
	if !strings.Contains(ref, ":") {
		t, ok := s.byEndpoint[strings.ToLower(ref)+":5432"]
		return t, ok
	}
	return nil, false
}

// Withheld says why the discovered database that would be target name
// is not served; false when no database of that name was found.
func (s *Snapshot) Withheld(name string) (Withheld, bool) {
	w, ok := s.withheld[name]
	return w, ok
}

// Targets returns the targets sorted by name. The slice is shared: do not
// modify it.
func (s *Snapshot) Targets() []Target { return s.targets }

// Built is when the snapshot was made.
func (s *Snapshot) Built() time.Time { return s.built }

// Len is the number of targets.
func (s *Snapshot) Len() int { return len(s.targets) }

func normalizeEndpoint(endpoint string) string {
	host, port, err := SplitEndpoint(endpoint)
	if err != nil {
		return strings.ToLower(endpoint)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
