package main

import "runtime/debug"

// buildVersion is the version every build path reports: the -X main.version
// value of `make build` and the release; else what the Go toolchain recorded
// (`go install github.com/rdsproxy/rdsproxy@v1.2.3` gives v1.2.3, a build in
// a git checkout gives a pseudo-version from the commit, +dirty when the tree
// was modified); else the VCS revision; else "dev".
func buildVersion(stamped string) string {
	if stamped != "" && stamped != "dev" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		return "dev-" + rev[:min(12, len(rev))] + dirty
	}
	return "dev"
}
