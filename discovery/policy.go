package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Kind is what a Database describes.
type Kind string

const (
	// KindInstance is an RDS DB instance (DescribeDBInstances).
	KindInstance Kind = "instance"
	// KindCluster is an Aurora DB cluster (DescribeDBClusters).
	KindCluster Kind = "cluster"
)

// Target.Source values.
const (
	SourceStatic      = "static"
	SourceRDSInstance = "rds-instance"
	SourceRDSCluster  = "rds-cluster"
)

// Target.Role values.
const (
	RoleInstance = "instance"
	RoleWriter   = "writer"
	RoleReader   = "reader"
)

// Database is what a source reports about one DB instance or Aurora
// cluster, before any rule is applied.
type Database struct {
	Region     string
	Kind       Kind
	Identifier string
	Engine     string
	Status     string
	IAMAuth    bool
	// Endpoint is host:port of the instance, or of the cluster's writer.
	// Empty while AWS has not assigned one yet.
	Endpoint string
	// ReaderEndpoint is host:port of a cluster's reader endpoint.
	ReaderEndpoint string
	// Cluster is the Aurora cluster an instance belongs to, if any.
	Cluster string
	Tags    map[string]string
}

// Connectable reports whether a DB instance or cluster in this status
// accepts connections. Every other status (creating, deleting, stopped,
// stopping, starting, rebooting, upgrading, renaming, failing-over, failed,
// inaccessible-encryption-credentials, incompatible-*,
// insufficient-capacity, restore-error, …) removes the database from the
// snapshot until a refresh sees it connectable again: new connections are
// refused, sessions already running are not cut.
func Connectable(status string) bool {
	switch status {
	case "available",
		"backing-up",
		"configuring-enhanced-monitoring",
		"configuring-iam-database-auth",
		"configuring-log-exports",
		"maintenance",
		"modifying",
		"resetting-master-credentials",
		"storage-config-upgrade",
		"storage-full",
		"storage-initialization",
		"storage-optimization",
		"update-iam-db-auth":
		return true
	}
	return false
}

// Policy turns databases into targets.
//
// A database is a target when its engine is postgres or
// aurora-postgresql, IAM database authentication is enabled, its status is
// Connectable, and its tags pass Rules. An instance that belongs to an
// Aurora cluster is reached through its cluster's endpoints; it becomes a
// target of its own only when it also carries its own rdsproxy:name tag.
//
// Names: tag rdsproxy:name, else the identifier; an Aurora cluster yields
// a writer target NAME and a reader target NAME-ro. Names are unique,
// decided in this order:
//
//  1. Static targets keep their names (the operator wrote them).
//  2. Databases are taken in order of region (the order of Regions; regions
//     not listed come after, alphabetically), then instances before
//     clusters, then identifier. The first to claim a name keeps it.
//     Every PostgreSQL database claims its name, served or not, so a
//     database that is denied, stopped or loses IAM authentication does
//     not hand its name to another one; only deletion frees a name.
//  3. A later database whose name (or, for a cluster, whose NAME-ro) is
//     taken becomes NAME.REGION (reader NAME.REGION-ro); if that is taken
//     too, NAME.REGION.IDENTIFIER; if even that is taken, it is left out
//     with a warning.
//
// So the same identifier in two regions is "db" in the first configured
// region and "db.eu-west-1" in the other.
type Policy struct {
	Rules   Rules
	Regions []string
	Static  []Target
}

// Warning is a problem with one admitted database: a tag that was ignored,
// or a name or endpoint that kept it out of the snapshot.
type Warning struct {
	Region     string
	Identifier string
	Message    string
}

// clone copies the policy deeply, so that a caller changing its slices
// later cannot change a running watcher or a snapshot.
func (p Policy) clone() Policy {
	p.Rules.Allow = slices.Clone(p.Rules.Allow)
	p.Rules.Deny = slices.Clone(p.Rules.Deny)
	p.Regions = slices.Clone(p.Regions)
	p.Static = slices.Clone(p.Static)
	for i := range p.Static {
		p.Static[i].Users = slices.Clone(p.Static[i].Users)
		p.Static[i].Principals = slices.Clone(p.Static[i].Principals)
	}
	return p
}

// Validate checks the rules and the static targets.
func (p Policy) Validate() error {
	if err := p.Rules.Validate(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(p.Static))
	for i := range p.Static {
		t := &p.Static[i]
		if err := t.Validate(); err != nil {
			return fmt.Errorf("static target: %w", err)
		}
		if seen[t.Name] {
			return fmt.Errorf("two static targets are named %q", t.Name)
		}
		seen[t.Name] = true
	}
	return nil
}

// Targets applies the policy to dbs and returns the static targets plus
// the admitted databases, named uniquely. It does not modify dbs.
func (p Policy) Targets(dbs []Database) ([]Target, []Warning) {
	targets, _, warns := p.selectTargets(dbs)
	return targets, warns
}

// Withheld says why a database that keeps its name (see Policy) is not
// served.
type Withheld struct {
	Reason string // for the operator's log, e.g. "status stopped"
	// ByRules: the tag rules keep it out, the operator's access policy;
	// else its state does (status, IAM authentication, endpoint, tags
	// that do not parse).
	ByRules bool
}

// selectTargets is Targets, with why each named database left out is
// withheld.
func (p Policy) selectTargets(dbs []Database) ([]Target, map[database]Withheld, []Warning) {
	var warns []Warning
	withheld := make(map[database]Withheld)
	candidates := make([]*Database, 0, len(dbs))
	for i := range dbs {
		if named(&dbs[i]) {
			candidates = append(candidates, &dbs[i])
		}
	}
	slices.SortFunc(candidates, p.compare)

	out := slices.Clone(p.Static)
	taken := make(map[string]bool, len(out)+2*len(candidates))
	for _, t := range out {
		taken[t.Name] = true
	}
	for _, db := range candidates {
		withhold := p.admit(db)
		base, w := targetBase(db)
		if withhold == nil {
			warns = append(warns, w...)
			if err := validateBoth(db, base); err != nil {
				warns = append(warns, Warning{db.Region, db.Identifier, err.Error() + "; not served"})
				withhold = &Withheld{Reason: "tags that do not parse"}
			}
		}
		name, ok := uniqueName(db, base.Name, taken)
		if !ok {
			if withhold == nil {
				warns = append(warns, Warning{db.Region, db.Identifier,
					fmt.Sprintf("name %q is taken and so are its region-qualified forms; not served", base.Name)})
			}
			continue
		}
		// Every candidate claims its name, served or not (see Policy).
		taken[name] = true
		if db.Kind == KindCluster {
			taken[name+"-ro"] = true
		}
		if withhold != nil {
			withheld[databaseOf(&base)] = *withhold
			if db.Kind == KindCluster {
				reader := databaseOf(&base)
				reader.role = RoleReader
				withheld[reader] = *withhold
			}
			continue
		}
		base.Name = name
		out = append(out, base)
		if db.Kind == KindCluster {
			reader := base
			reader.Name = name + "-ro"
			reader.Endpoint = db.ReaderEndpoint
			reader.Role = RoleReader
			reader.Users = slices.Clone(base.Users)
			reader.Principals = slices.Clone(base.Principals)
			out = append(out, reader)
		}
	}
	return out, withheld, warns
}

// named reports whether db takes part in naming: every PostgreSQL
// database that could be a target of its own, whether it is admitted now
// or not. A database that stops being served (denied by a tag, stopped,
// IAM turned off) keeps its name reserved, so the name never moves to a
// different database; only a deleted database frees its name.
func named(db *Database) bool {
	if db.Engine != "postgres" && db.Engine != "aurora-postgresql" {
		return false
	}
	return db.Kind != KindInstance || db.Cluster == "" || db.Tags[TagName] != ""
}

// admit returns nil when db is served, else why it is withheld, the tag
// rules first: they are the operator's decision, whatever the database's
// state. Only named databases (see named) come here.
func (p Policy) admit(db *Database) *Withheld {
	switch {
	case !p.Rules.Admit(db.Tags):
		return &Withheld{Reason: "the tag rules", ByRules: true}
	case !db.IAMAuth:
		return &Withheld{Reason: "IAM database authentication is off"}
	case !Connectable(db.Status):
		return &Withheld{Reason: "status " + db.Status}
	case db.Endpoint == "" || db.Kind == KindCluster && db.ReaderEndpoint == "":
		return &Withheld{Reason: "no endpoint yet"}
	}
	return nil
}

// compare orders databases for naming (see Policy).
func (p Policy) compare(a, b *Database) int {
	return cmp.Or(
		cmp.Compare(p.regionRank(a.Region), p.regionRank(b.Region)),
		strings.Compare(a.Region, b.Region),
		cmp.Compare(kindRank(a.Kind), kindRank(b.Kind)),
		strings.Compare(a.Identifier, b.Identifier),
	)
}

func (p Policy) regionRank(region string) int {
	if i := slices.Index(p.Regions, region); i >= 0 {
		return i
	}
	return len(p.Regions)
}

func kindRank(k Kind) int {
	if k == KindInstance {
		return 0
	}
	return 1
}

// validateBoth checks the target (and a cluster's reader endpoint) before
// it can spoil the whole snapshot.
func validateBoth(db *Database, t Target) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if db.Kind == KindCluster {
		if _, _, err := SplitEndpoint(db.ReaderEndpoint); err != nil {
			return fmt.Errorf("reader: %w", err)
		}
	}
	return nil
}

// uniqueName picks the first free name among base, base.REGION and
// base.REGION.IDENTIFIER; a cluster needs NAME-ro free as well.
func uniqueName(db *Database, base string, taken map[string]bool) (string, bool) {
	free := func(n string) bool {
		return !taken[n] && (db.Kind != KindCluster || !taken[n+"-ro"])
	}
	for _, n := range []string{base, base + "." + db.Region, base + "." + db.Region + "." + db.Identifier} {
		if free(n) {
			return n, true
		}
	}
	return "", false
}

// targetBase builds the target of an admitted database (the writer, for a
// cluster) from its tags, before its name is made unique.
func targetBase(db *Database) (Target, []Warning) {
	var warns []Warning
	warn := func(format string, args ...any) {
		warns = append(warns, Warning{db.Region, db.Identifier, fmt.Sprintf(format, args...)})
	}
	t := Target{
		Name:       cmp.Or(db.Tags[TagName], db.Identifier),
		Endpoint:   db.Endpoint,
		Region:     db.Region,
		Auth:       AuthIAM,
		TLS:        TLSVerifyFull,
		Engine:     db.Engine,
		Role:       RoleInstance,
		Identifier: db.Identifier,
		Database:   db.Tags[TagDBName],
		Source:     SourceRDSInstance,
	}
	if db.Kind == KindCluster {
		t.Role, t.Source = RoleWriter, SourceRDSCluster
	}
	if v, ok := db.Tags[TagLocalPort]; ok {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			warn("tag %s=%q is not a port number; ignored", TagLocalPort, v)
		} else {
			t.LocalPort = port
		}
	}
	if v, ok := db.Tags[TagUsers]; ok {
		t.Users = splitUsers(v)
		if len(t.Users) == 0 {
			warn("tag %s is empty; every user is allowed", TagUsers)
		}
	}
	if v, ok := db.Tags[TagPrincipals]; ok {
		if t.Principals = ParsePrincipals(v); len(t.Principals) == 0 {
			// Fails closed: an empty rule admits nobody rather than everybody.
			warn("tag %s is empty; no caller is allowed", TagPrincipals)
			t.Principals = []string{noPrincipal}
		}
	}
	if v, ok := db.Tags[TagReadOnly]; ok {
		ro, err := strconv.ParseBool(v)
		if err != nil {
			// A guardrail fails closed: a typo must not allow writes.
			warn("tag %s=%q is not true or false; treated as true", TagReadOnly, v)
			ro = true
		}
		t.ReadOnly = ro
	}
	return t, warns
}

func splitUsers(v string) []string {
	var users []string
	for u := range strings.SplitSeq(v, ",") {
		if u = strings.TrimSpace(u); u != "" && !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	return users
}
