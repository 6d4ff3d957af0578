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
	byDatabase map[database]*Target
	withheld   map[database]Withheld // discovered databases not served
	built      time.Time
}

// database identifies the database behind a target whatever name it has
// now: a discovered one by source, region, identifier and role (a
// cluster's writer and reader endpoints are two), a static one by name.
type database struct{ source, region, identifier, role, name string }

func databaseOf(t *Target) database {
	if t.Source == SourceStatic {
		return database{source: SourceStatic, name: t.Name}
	}
	return database{source: t.Source, region: t.Region, identifier: t.Identifier, role: t.Role}
}

// NewSnapshot validates targets and indexes them. Names must be unique;
// callers resolve collisions before (see the discovery rules).
func NewSnapshot(targets []Target, built time.Time) (*Snapshot, error) {
	s := &Snapshot{
		targets:    slices.Clone(targets),
		byName:     make(map[string]*Target, len(targets)),
		byEndpoint: make(map[string]*Target, len(targets)),
		byDatabase: make(map[database]*Target, len(targets)),
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
		s.byDatabase[databaseOf(t)] = t
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

// Standing finds the database behind t, a target of this or an earlier
// snapshot, whatever its name is now: the target that serves it (cur), or
// why it is withheld. ok is false when the snapshot knows no such
// database (deleted). A static target no longer configured counts as
// withheld by the rules: the operator took it out.
func (s *Snapshot) Standing(t *Target) (cur *Target, why Withheld, ok bool) {
	db := databaseOf(t)
	if cur, ok := s.byDatabase[db]; ok {
		return cur, Withheld{}, true
	}
	if db.source == SourceStatic {
		return nil, Withheld{Reason: "no longer configured", ByRules: true}, true
	}
	why, ok = s.withheld[db]
	return nil, why, ok
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
