package server

import (
	"context"
	"testing"

	"github.com/rdsproxy/rdsproxy/discovery"
)

// snapshots builds one snapshot per state through a real discovery
// watcher (its policy, names, withholding), as a server's refreshes do.
func snapshots(t *testing.T, static [][]discovery.Target, states ...[]discovery.Database) []*discovery.Snapshot {
	t.Helper()
	var dbs []discovery.Database
	w, err := discovery.NewWatcher(discovery.WatcherConfig{
		Fetch:  func(context.Context) ([]discovery.Database, error) { return dbs, nil },
		Policy: discovery.Policy{Regions: []string{"r1", "r2"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*discovery.Snapshot
	for i, state := range states {
		dbs = state
		if static != nil {
			if err := w.SetConfig(discovery.Policy{Regions: []string{"r1", "r2"}, Static: static[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		out = append(out, w.Current())
	}
	return out
}

func db(region, id string, tags ...string) discovery.Database {
	d := discovery.Database{Region: region, Kind: discovery.KindInstance, Identifier: id, Engine: "postgres", Status: "available",
		IAMAuth: true, Endpoint: id + "." + region + ".rds.example:5432", Tags: map[string]string{}}
	for i := 0; i+1 < len(tags); i += 2 {
		d.Tags[tags[i]] = tags[i+1]
	}
	return d
}

func aurora(region, id string, tags ...string) discovery.Database {
	d := db(region, id, tags...)
	d.Kind, d.Engine = discovery.KindCluster, "aurora-postgresql"
	d.ReaderEndpoint = id + ".ro." + region + ".rds.example:5432"
	return d
}

const on, name, users, principals = discovery.TagEnabled, discovery.TagName, discovery.TagUsers, discovery.TagPrincipals

// A running session is checked against each new snapshot by its database,
// whatever that database's target is named now: the rules, users and
// principals that admitted it are its database's, not those of whatever
// database carries the name later.
func TestAdmissionFollowsTheDatabase(t *testing.T) {
	alice := &discovery.Principal{ARN: "arn:aws:iam::111122223333:user/alice", Normalized: "arn:aws:iam::111122223333:user/alice", Account: "111122223333"}
	pgStatic := func(users ...string) []discovery.Target {
		return []discovery.Target{discovery.Static(discovery.Target{Name: "pg", Endpoint: "pg.internal:5432", Auth: discovery.AuthPassthrough,
			TLS: discovery.TLSDisable, Users: users})}
	}
	for _, tc := range []struct {
		name      string
		static    [][]discovery.Target
		before    []discovery.Database
		after     []discovery.Database
		target    string // the session's target in the first snapshot
		user      string
		principal *discovery.Principal
		want      string
	}{
		{name: "unchanged", before: []discovery.Database{db("r1", "a", on, "true")}, after: []discovery.Database{db("r1", "a", on, "true")},
			target: "a", user: "app"},
		{name: "denied by the tag rules", before: []discovery.Database{db("r1", "a", on, "true")}, after: []discovery.Database{db("r1", "a")},
			target: "a", user: "app", want: "the tag rules no longer admit the target"},
		{name: "withheld for its state", before: []discovery.Database{db("r1", "a", on, "true")},
			after:  []discovery.Database{func() discovery.Database { d := db("r1", "a", on, "true"); d.Status = "rebooting"; return d }()},
			target: "a", user: "app"},
		{name: "deleted", before: []discovery.Database{db("r1", "a", on, "true")}, target: "a", user: "app"},
		{name: "user dropped from rdsproxy:users", before: []discovery.Database{db("r1", "a", on, "true", users, "app,ops")},
			after: []discovery.Database{db("r1", "a", on, "true", users, "ops")}, target: "a", user: "app",
			want: "its database user is no longer among the target's users"},
		{name: "caller dropped from rdsproxy:principals", before: []discovery.Database{db("r1", "a", on, "true", principals, "arn:aws:iam::111122223333:user/*")},
			after: []discovery.Database{db("r1", "a", on, "true", principals, "arn:aws:iam::111122223333:user/bob")}, target: "a", user: "app",
			principal: alice, want: "its caller is no longer among the target's principals"},
		{name: "a principal rule added, the session has no verified caller", before: []discovery.Database{db("r1", "a", on, "true")},
			after: []discovery.Database{db("r1", "a", on, "true", principals, "arn:aws:iam::111122223333:user/*")}, target: "a", user: "app",
			want: "its caller is no longer among the target's principals"},
		{name: "a cluster's reader denied", before: []discovery.Database{aurora("r1", "c", on, "true")}, after: []discovery.Database{aurora("r1", "c")},
			target: "c-ro", user: "app", want: "the tag rules no longer admit the target"},
		{name: "blue/green: the name moves to a database not enabled yet; the old one is still served",
			before: []discovery.Database{db("r1", "blue", on, "true", name, "orders")},
			after:  []discovery.Database{db("r1", "blue", on, "true", name, "orders-old"), db("r1", "green", name, "orders")},
			target: "orders", user: "app"},
		{name: "a namesake deleted: the session's database takes the plain name, then drops the user",
			before: []discovery.Database{db("r1", "orders", on, "true"), db("r2", "orders", on, "true")},
			after:  []discovery.Database{db("r2", "orders", on, "true", users, "ops")},
			target: "orders.r2", user: "app", want: "its database user is no longer among the target's users"},
		{name: "a static target no longer configured", static: [][]discovery.Target{pgStatic(), nil},
			before: nil, after: nil, target: "pg", user: "app", want: "the target is no longer configured"},
		{name: "a static target's users changed", static: [][]discovery.Target{pgStatic(), pgStatic("ops")},
			target: "pg", user: "app", want: "its database user is no longer among the target's users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snaps := snapshots(t, tc.static, tc.before, tc.after)
			target, ok := snaps[0].Lookup(tc.target)
			if !ok {
				t.Fatalf("no target %q in the first snapshot: %v", tc.target, snaps[0].Targets())
			}
			a := &admission{target: target, user: tc.user, principal: tc.principal}
			if got := a.refusedBy(snaps[0]); got != "" {
				t.Fatalf("the snapshot that admitted the session refuses it: %s", got)
			}
			if got := a.refusedBy(snaps[1]); got != tc.want {
				t.Errorf("refusedBy = %q, want %q", got, tc.want)
			}
		})
	}
}
