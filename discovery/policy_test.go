package discovery

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testTime = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

var optIn = map[string]string{TagEnabled: "true"}

func inst(region, id string, tags map[string]string) Database {
	return Database{
		Region: region, Kind: KindInstance, Identifier: id, Engine: "postgres",
		Status: "available", IAMAuth: true,
		Endpoint: id + ".x." + region + ".rds.amazonaws.com:5432", Tags: tags,
	}
}

func cluster(region, id string, tags map[string]string) Database {
	return Database{
		Region: region, Kind: KindCluster, Identifier: id, Engine: "aurora-postgresql",
		Status: "available", IAMAuth: true,
		Endpoint:       id + ".cluster-x." + region + ".rds.amazonaws.com:5432",
		ReaderEndpoint: id + ".cluster-ro-x." + region + ".rds.amazonaws.com:5432",
		Tags:           tags,
	}
}

func names(ts []Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	slices.Sort(out)
	return out
}

func TestConnectable(t *testing.T) {
	for _, s := range []string{"available", "backing-up", "modifying", "storage-optimization",
		"configuring-enhanced-monitoring", "configuring-iam-database-auth", "configuring-log-exports",
		"maintenance", "storage-full", "update-iam-db-auth"} {
		if !Connectable(s) {
			t.Errorf("Connectable(%q) = false, want true", s)
		}
	}
	// moto cannot produce most of these (DeleteDBInstance removes the
	// instance at once), so the rule is proven here, on the pure function.
	for _, s := range []string{"deleting", "creating", "stopped", "stopping", "starting", "failed",
		"rebooting", "upgrading", "renaming", "failing-over", "inaccessible-encryption-credentials",
		"incompatible-parameters", "insufficient-capacity", "restore-error", "", "Available"} {
		if Connectable(s) {
			t.Errorf("Connectable(%q) = true, want false", s)
		}
	}
}

func TestPolicyAdmission(t *testing.T) {
	member := inst("r1", "aurora-1", optIn)
	member.Engine, member.Cluster = "aurora-postgresql", "aurora"
	namedMember := member
	namedMember.Identifier = "aurora-2"
	namedMember.Tags = map[string]string{TagEnabled: "true", TagName: "pinned"}
	deleting := inst("r1", "deleting", optIn)
	deleting.Status = "deleting"
	noIAM := inst("r1", "noiam", optIn)
	noIAM.IAMAuth = false
	mysql := inst("r1", "mysql", optIn)
	mysql.Engine = "mysql"
	creating := inst("r1", "creating", optIn)
	creating.Status, creating.Endpoint = "creating", ""
	stoppedCluster := cluster("r1", "stopped-cluster", optIn)
	stoppedCluster.Status = "stopped"

	dbs := []Database{
		inst("r1", "ok", optIn), inst("r1", "untagged", nil),
		inst("r1", "optout", map[string]string{TagEnabled: "false"}),
		member, namedMember, deleting, noIAM, mysql, creating, stoppedCluster,
		cluster("r1", "aurora", optIn),
	}
	got, warns := Policy{}.Targets(dbs)
	want := []string{"aurora", "aurora-ro", "ok", "pinned"}
	if diff := cmp.Diff(want, names(got)); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if len(warns) != 0 {
		t.Errorf("unexpected warnings: %v", warns)
	}
}

func TestPolicyTargetFields(t *testing.T) {
	c := cluster("eu-west-1", "orders", map[string]string{
		TagEnabled: "true", TagName: "shop", TagDBName: "orders",
		TagLocalPort: "6543", TagUsers: " alice, bob,,alice ", TagReadOnly: "true",
	})
	got, warns := Policy{}.Targets([]Database{c})
	writer := Target{
		Name: "shop", Endpoint: c.Endpoint, Region: "eu-west-1", Auth: AuthIAM, TLS: TLSVerifyFull,
		Engine: "aurora-postgresql", Role: RoleWriter, Identifier: "orders", Database: "orders",
		LocalPort: 6543, Users: []string{"alice", "bob"}, ReadOnly: true, Source: SourceRDSCluster,
	}
	reader := writer
	reader.Name, reader.Endpoint, reader.Role = "shop-ro", c.ReaderEndpoint, RoleReader
	if diff := cmp.Diff([]Target{writer, reader}, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if len(warns) != 0 {
		t.Errorf("unexpected warnings: %v", warns)
	}
	// The reader's Users must not alias the writer's.
	got[1].Users[0] = "mallory"
	if got[0].Users[0] != "alice" {
		t.Error("reader and writer share their Users slice")
	}
}

func TestPolicyBadTags(t *testing.T) {
	tests := []struct {
		name     string
		tags     map[string]string
		want     func(*Target)
		warnPart string
	}{
		{"port not a number", map[string]string{TagLocalPort: "abc"}, func(*Target) {}, TagLocalPort},
		{"port out of range", map[string]string{TagLocalPort: "70000"}, func(*Target) {}, TagLocalPort},
		{"port zero", map[string]string{TagLocalPort: "0"}, func(*Target) {}, TagLocalPort},
		{"read-only typo fails closed", map[string]string{TagReadOnly: "yes"},
			func(t *Target) { t.ReadOnly = true }, TagReadOnly},
		{"read-only false", map[string]string{TagReadOnly: "false"}, func(*Target) {}, ""},
		{"empty users", map[string]string{TagUsers: " , "}, func(*Target) {}, TagUsers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags := map[string]string{TagEnabled: "true"}
			for k, v := range tt.tags {
				tags[k] = v
			}
			db := inst("r1", "db", tags)
			got, warns := Policy{}.Targets([]Database{db})
			want := Target{Name: "db", Endpoint: db.Endpoint, Region: "r1", Auth: AuthIAM,
				TLS: TLSVerifyFull, Engine: "postgres", Role: RoleInstance, Identifier: "db",
				Source: SourceRDSInstance}
			tt.want(&want)
			if diff := cmp.Diff([]Target{want}, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if tt.warnPart == "" {
				if len(warns) != 0 {
					t.Errorf("unexpected warnings: %v", warns)
				}
				return
			}
			if len(warns) != 1 || !strings.Contains(warns[0].Message, tt.warnPart) ||
				warns[0].Identifier != "db" || warns[0].Region != "r1" {
				t.Errorf("warnings = %v, want one about %s", warns, tt.warnPart)
			}
		})
	}
}

func TestPolicyNames(t *testing.T) {
	named := func(db Database, name string) Database {
		db.Tags = map[string]string{TagEnabled: "true", TagName: name}
		return db
	}
	static := Target{Name: "pg", Endpoint: "10.0.0.1:5432", Auth: AuthPassthrough, TLS: TLSDisable, Source: SourceStatic}
	tests := []struct {
		name    string
		regions []string
		static  []Target
		dbs     []Database
		want    map[string]string // target name → region/identifier
		warns   int
	}{
		{
			name:    "same identifier in two regions: first configured region keeps the name",
			regions: []string{"us-east-1", "eu-west-1"},
			dbs:     []Database{inst("eu-west-1", "db", optIn), inst("us-east-1", "db", optIn)},
			want:    map[string]string{"db": "us-east-1/db", "db.eu-west-1": "eu-west-1/db"},
		},
		{
			name:    "a database that is not served keeps its name: the other region's database does not take it",
			regions: []string{"us-east-1", "eu-west-1"},
			dbs: []Database{func() Database { d := inst("us-east-1", "db", optIn); d.IAMAuth = false; return d }(),
				inst("eu-west-1", "db", optIn)},
			want: map[string]string{"db.eu-west-1": "eu-west-1/db"},
		},
		{
			name:    "a denied or stopped database keeps its name too",
			regions: []string{"us-east-1", "eu-west-1"},
			dbs: []Database{inst("us-east-1", "db", nil),
				func() Database { d := inst("us-east-1", "stopped", optIn); d.Status = "stopped"; return d }(),
				inst("eu-west-1", "db", optIn), inst("eu-west-1", "stopped", optIn)},
			want: map[string]string{"db.eu-west-1": "eu-west-1/db", "stopped.eu-west-1": "eu-west-1/stopped"},
		},
		{
			name:    "region order is the configured one, not the alphabet",
			regions: []string{"us-east-1", "eu-west-1"},
			dbs:     []Database{inst("us-east-1", "db", optIn), inst("eu-west-1", "db", optIn)},
			want:    map[string]string{"db": "us-east-1/db", "db.eu-west-1": "eu-west-1/db"},
		},
		{
			name:    "unlisted regions come after listed ones, alphabetically",
			regions: []string{"us-east-1"},
			dbs: []Database{inst("eu-west-1", "db", optIn), inst("ap-south-1", "db", optIn),
				inst("us-east-1", "db", optIn)},
			want: map[string]string{"db": "us-east-1/db", "db.ap-south-1": "ap-south-1/db",
				"db.eu-west-1": "eu-west-1/db"},
		},
		{
			name: "tag duplicates in one region: identifier order, then region then identifier suffix",
			dbs: []Database{named(inst("r1", "b", nil), "app"), named(inst("r1", "a", nil), "app"),
				named(inst("r1", "c", nil), "app")},
			want: map[string]string{"app": "r1/a", "app.r1": "r1/b", "app.r1.c": "r1/c"},
		},
		{
			name: "instances before clusters; a cluster moves with its reader",
			dbs:  []Database{cluster("r1", "x", optIn), named(inst("r1", "i", nil), "x")},
			want: map[string]string{"x": "r1/i", "x.r1": "r1/x", "x.r1-ro": "r1/x"},
		},
		{
			name: "a taken reader name moves the cluster",
			dbs:  []Database{cluster("r1", "x", optIn), named(inst("r1", "i", nil), "x-ro")},
			want: map[string]string{"x-ro": "r1/i", "x.r1": "r1/x", "x.r1-ro": "r1/x"},
		},
		{
			name:   "static targets keep their names",
			static: []Target{static},
			dbs:    []Database{inst("r1", "pg", optIn)},
			want:   map[string]string{"pg": "/", "pg.r1": "r1/pg"},
		},
		{
			name: "suffixes chain deterministically",
			dbs: []Database{named(inst("r1", "a", nil), "app"), named(inst("r1", "b", nil), "app.r1.c"),
				named(inst("r1", "c", nil), "app"), named(inst("r1", "d", nil), "app.r1")},
			want: map[string]string{"app": "r1/a", "app.r1.c": "r1/b", "app.r1": "r1/c",
				"app.r1.r1": "r1/d"},
		},
		{
			name: "no free name left: left out with a warning",
			dbs: []Database{named(inst("r1", "a", nil), "app"), named(inst("r1", "b", nil), "app.r1"),
				named(inst("r1", "c", nil), "app.r1.x"), named(cluster("r1", "x", nil), "app")},
			want:  map[string]string{"app": "r1/a", "app.r1": "r1/b", "app.r1.x": "r1/c"},
			warns: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{Regions: tt.regions, Static: tt.static}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			got, warns := p.Targets(tt.dbs)
			gotMap := map[string]string{}
			for _, tg := range got {
				gotMap[tg.Name] = tg.Region + "/" + tg.Identifier
			}
			if diff := cmp.Diff(tt.want, gotMap); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if len(warns) != tt.warns {
				t.Errorf("warnings = %v, want %d", warns, tt.warns)
			}
			if _, err := NewSnapshot(got, testTime); err != nil {
				t.Errorf("NewSnapshot: %v", err)
			}
			// The result does not depend on the order the source listed them.
			rev := slices.Clone(tt.dbs)
			slices.Reverse(rev)
			again, _ := p.Targets(rev)
			if diff := cmp.Diff(names(got), names(again)); diff != "" {
				t.Errorf("order-dependent names (-first +reversed):\n%s", diff)
			}
		})
	}
}

func TestPolicyInvalidDatabaseIsLeftOut(t *testing.T) {
	bad := inst("r1", "bad", optIn)
	bad.Endpoint = "no-port"
	noRegion := inst("", "noregion", optIn)
	got, warns := Policy{}.Targets([]Database{bad, noRegion, inst("r1", "good", optIn)})
	if diff := cmp.Diff([]string{"good"}, names(got)); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if len(warns) != 2 {
		t.Errorf("warnings = %v, want 2", warns)
	}
}

func TestPolicyValidate(t *testing.T) {
	ok := Target{Name: "a", Endpoint: "h:1", Auth: AuthPassthrough, TLS: TLSDisable, Source: SourceStatic}
	bad := ok
	bad.Endpoint = "h"
	for _, p := range []Policy{
		{Static: []Target{ok, ok}},
		{Static: []Target{bad}},
		{Rules: Rules{Allow: []Rule{{}}}},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
}
