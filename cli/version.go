package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version line.
func (VersionCmd) Run(env Env) error {
	fmt.Fprintln(env.Stdout, versionLine(env.Version))
	return nil
}

// versionLine is what --version and the version command print: the
// version linked in by the Makefile, else the module version `go install`
// records, then the Go version and the platform.
func versionLine(linked string) string {
	v := linked
	if bi, ok := debug.ReadBuildInfo(); ok && (v == "" || v == "dev") {
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			v = mv
		} else if rev := buildSetting(bi, "vcs.revision"); rev != "" {
			v = "dev-" + rev[:min(12, len(rev))]
		}
	}
	if v == "" {
		v = "dev"
	}
	return fmt.Sprintf("rdsproxy %s (%s, %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func buildSetting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
