package main

// The release, checked offline: .goreleaser.yaml is read and a binary is
// built exactly as its `builds` entry says; the Dockerfile is interpreted
// into an OCI image layout (go-containerregistry) with that binary staged as
// goreleaser's dockers_v2 stages it, and the layout is read back and checked
// (platform, user, entrypoint, files) and its entrypoint run. `make build`
// and a plain `go build` are checked for a static binary and a version.

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.yaml.in/yaml/v3"
)

// goreleaser is the part of .goreleaser.yaml the release depends on.
type goreleaser struct {
	Version     int
	ProjectName string `yaml:"project_name"`
	Builds      []struct {
		ID, Main, Binary string
		Env, Flags       []string
		Ldflags          []string
		Goos, Goarch     []string
	}
	Archives []struct {
		NameTemplate    string `yaml:"name_template"`
		Formats         []string
		FormatOverrides []struct {
			Goos    string
			Formats []string
		} `yaml:"format_overrides"`
	}
	Checksum struct {
		NameTemplate string `yaml:"name_template"`
		Algorithm    string
	}
	DockersV2 []struct {
		Dockerfile string
		Images     []string
		Platforms  []string
		IDs        []string `yaml:"ids"`
	} `yaml:"dockers_v2"`
}

func readGoreleaser(t *testing.T) goreleaser {
	t.Helper()
	b, err := os.ReadFile(".goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(b, &top); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	known := []string{"version", "project_name", "before", "builds", "archives", "checksum", "dockers_v2", "changelog", "release"}
	for k := range top {
		if !slices.Contains(known, k) {
			t.Errorf(".goreleaser.yaml: unexpected top-level key %q (misspelled? extend the test if new)", k)
		}
	}
	var g goreleaser
	if err := yaml.Unmarshal(b, &g); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	return g
}

// render fills the goreleaser template fields this repository uses.
func render(tmpl string, vars map[string]string) string {
	return regexp.MustCompile(`\{\{\s*\.(\w+)\s*\}\}`).ReplaceAllStringFunc(tmpl, func(m string) string {
		name := regexp.MustCompile(`\w+`).FindString(m)
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

func TestGoreleaserConfig(t *testing.T) {
	g := readGoreleaser(t)
	if g.Version != 2 || g.ProjectName != "rdsproxy" {
		t.Errorf("version %d project %q; want 2 and rdsproxy", g.Version, g.ProjectName)
	}
	if len(g.Builds) != 1 {
		t.Fatalf("want one build, found %d", len(g.Builds))
	}
	b := g.Builds[0]
	if !slices.Contains(b.Env, "CGO_ENABLED=0") || !slices.Contains(b.Flags, "-trimpath") || b.Binary != "rdsproxy" {
		t.Errorf("build: env %q flags %q binary %q; want a static (CGO_ENABLED=0), -trimpath build of rdsproxy", b.Env, b.Flags, b.Binary)
	}
	if !regexp.MustCompile(`-X main\.version=\S*\{\{ *\.Version *\}\}`).MatchString(strings.Join(b.Ldflags, " ")) {
		t.Errorf("build ldflags %q do not stamp main.version", b.Ldflags)
	}
	slices.Sort(b.Goos)
	slices.Sort(b.Goarch)
	if !slices.Equal(b.Goos, []string{"darwin", "linux", "windows"}) || !slices.Equal(b.Goarch, []string{"amd64", "arm64"}) {
		t.Errorf("build targets %q x %q; want darwin, linux, windows x amd64, arm64", b.Goos, b.Goarch)
	}
	if len(g.Archives) != 1 || !slices.Equal(g.Archives[0].Formats, []string{"tar.gz"}) ||
		len(g.Archives[0].FormatOverrides) != 1 || g.Archives[0].FormatOverrides[0].Goos != "windows" ||
		!slices.Equal(g.Archives[0].FormatOverrides[0].Formats, []string{"zip"}) {
		t.Errorf("archives: want tar.gz, and zip for windows: %+v", g.Archives)
	}
	if g.Checksum.NameTemplate == "" || g.Checksum.Algorithm != "sha256" {
		t.Errorf("checksum: %+v; want a sha256 checksums file", g.Checksum)
	}
	// The AWS module's README downloads a release archive by name.
	readme, err := os.ReadFile("terraform/modules/aws-server/README.md")
	if err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`https://github\.com/rdsproxy/rdsproxy/releases/download/v[0-9.]+/([A-Za-z0-9_.-]+)`).FindSubmatch(readme)
	if len(g.Archives) == 1 {
		name := render(g.Archives[0].NameTemplate, map[string]string{"ProjectName": g.ProjectName, "Os": "linux", "Arch": "arm64"}) + ".tar.gz"
		if url == nil || string(url[1]) != name {
			t.Errorf("the aws-server README's release URL does not name the archive %s", name)
		}
	}
	if len(g.DockersV2) != 1 {
		t.Fatalf("want one dockers_v2 image, found %d", len(g.DockersV2))
	}
	d := g.DockersV2[0]
	if d.Dockerfile != "Dockerfile" || !slices.Equal(d.Platforms, []string{"linux/amd64", "linux/arm64"}) || !slices.Equal(d.IDs, []string{b.ID}) {
		t.Errorf("dockers_v2: %+v; want the Dockerfile for linux/amd64 and linux/arm64 from build %s", d, b.ID)
	}
	// The Kubernetes module defaults to this image.
	vars, err := os.ReadFile("terraform/modules/kubernetes/variables.tf")
	if err != nil {
		t.Fatal(err)
	}
	def := regexp.MustCompile(`(?s)variable "image" \{.*?default\s*=\s*"([^"]+)"`).FindSubmatch(vars)
	if def == nil || len(d.Images) == 0 || !strings.HasPrefix(string(def[1]), d.Images[0]+":v") {
		t.Errorf("the kubernetes module's default image is not a release tag of %q", d.Images)
	}
	if gr, err := exec.LookPath("goreleaser"); err == nil {
		if out, err := exec.Command(gr, "check").CombinedOutput(); err != nil {
			t.Errorf("goreleaser check: %v\n%s", err, out)
		}
	} else {
		t.Log("NOTICE: goreleaser is not installed; `goreleaser check` was not run (the checks above were)")
	}
}

// goBuild builds the repository's binary with extra environment and args.
func goBuild(t *testing.T, out string, env []string, args ...string) {
	t.Helper()
	// Generous: a cold build on a busy 2-core machine takes minutes; the
	// later builds of these tests reuse its cache (same GOOS, CGO_ENABLED=0,
	// -trimpath) and only link.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"build"}, args...), "-o", out, ".")...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %q: %v\n%s", args, err, b)
	}
}

// checkStatic: an ELF executable with no interpreter and no shared libraries.
func checkStatic(t *testing.T, file string) {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (has an ELF interpreter)", file)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q", file, libs)
	}
}

func versionOf(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestReleaseImage builds the image as goreleaser would, offline: the
// binary per .goreleaser.yaml, staged as <os>/<arch>/rdsproxy, the
// Dockerfile's instructions applied on a stand-in for the distroless base
// (whose own files cannot be fetched here), written as an OCI layout.
func TestReleaseImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary")
	}
	g := readGoreleaser(t)
	if len(g.Builds) != 1 {
		t.Fatal("want one build")
	}
	b := g.Builds[0]
	platform := "linux/" + runtime.GOARCH
	stage := t.TempDir()
	bin := filepath.Join(stage, platform, b.Binary)
	vars := map[string]string{"Version": "1.2.3-test", "CommitTimestamp": "0"}
	goBuild(t, bin, append(slices.Clone(b.Env), "GOOS=linux", "GOARCH="+runtime.GOARCH),
		append(slices.Clone(b.Flags), "-ldflags", render(strings.Join(b.Ldflags, " "), vars))...)

	img, base := dockerfileImage(t, "Dockerfile", stage, platform)
	if !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot(@sha256:[0-9a-f]{64})?$`).MatchString(base) {
		t.Errorf("base image %q is not distroless static nonroot (which brings the CA roots)", base)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH})); err != nil {
		t.Fatal(err)
	}

	// Read the layout back as a registry or runtime would.
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	man, err := idx.IndexManifest()
	if err != nil || len(man.Manifests) != 1 {
		t.Fatalf("index: %v, %d manifests", err, len(man.Manifests))
	}
	got, err := idx.Image(man.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("image platform %s/%s, want %s", cfg.OS, cfg.Architecture, platform)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532 (numeric, so runAsNonRoot can verify it)", cfg.Config.User)
	}
	if len(cfg.Config.Entrypoint) != 1 {
		t.Fatalf("entrypoint %q, want the binary alone (arguments come from the caller)", cfg.Config.Entrypoint)
	}
	files := imageFiles(t, got)
	entry, ok := files[cfg.Config.Entrypoint[0]]
	if !ok {
		t.Fatalf("entrypoint %s is not a file in the image (files: %v)", cfg.Config.Entrypoint[0], keys(files))
	}
	if entry.mode&0o111 == 0 || entry.uid != 0 {
		t.Errorf("entrypoint mode %o uid %d; want executable, owned by root (not writable by the user)", entry.mode, entry.uid)
	}
	exe := filepath.Join(t.TempDir(), "entrypoint")
	if err := os.WriteFile(exe, entry.data, 0o755); err != nil {
		t.Fatal(err)
	}
	checkStatic(t, exe)
	if v := versionOf(t, exe); !strings.HasPrefix(v+" ", "rdsproxy v1.2.3-test ") {
		t.Errorf("the image's binary reports %q, want the release version rdsproxy v1.2.3-test", v)
	}
	for _, port := range []string{"5480/tcp", "9480/tcp"} {
		if _, ok := cfg.Config.ExposedPorts[port]; !ok {
			t.Errorf("port %s is not exposed", port)
		}
	}
}

type imageFile struct {
	mode int64
	uid  int
	data []byte
}

func keys(m map[string]imageFile) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// imageFiles flattens the image's layers.
func imageFiles(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = imageFile{mode: h.Mode, uid: h.Uid, data: data}
	}
}

// dockerfileImage applies the Dockerfile's instructions, a subset that the
// release needs (an unknown instruction fails the test), on an empty base,
// with the build context in dir and TARGETPLATFORM = platform. It returns the
// image and the base reference.
func dockerfileImage(t *testing.T, file, dir, platform string) (v1.Image, string) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	img := empty.Image
	cfg := v1.Config{ExposedPorts: map[string]struct{}{}}
	args := map[string]string{"TARGETPLATFORM": platform}
	var base string
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for n, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(rest, func(m string) string { return args[m[2:len(m)-1]] })
		switch strings.ToUpper(instr) {
		case "FROM":
			if base != "" {
				t.Fatalf("%s:%d: a second FROM: the release image is one stage", file, n+1)
			}
			base = rest
		case "ARG":
			if _, ok := args[rest]; !ok {
				t.Fatalf("%s:%d: ARG %s has no value in a goreleaser build", file, n+1, rest)
			}
		case "COPY":
			f := strings.Fields(rest)
			if len(f) != 2 || strings.HasPrefix(f[0], "--") {
				t.Fatalf("%s:%d: COPY %q: want one source and one destination", file, n+1, rest)
			}
			data, err := os.ReadFile(filepath.Join(dir, f[0]))
			if err != nil {
				t.Fatalf("%s:%d: COPY source %s is not in goreleaser's build context: %v", file, n+1, f[0], err)
			}
			fi, _ := os.Stat(filepath.Join(dir, f[0]))
			h := &tar.Header{Name: strings.TrimPrefix(f[1], "/"), Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), Typeflag: tar.TypeReg}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			tw.Write(data)
		case "USER":
			cfg.User = rest
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				cfg.ExposedPorts[p] = struct{}{}
			}
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				t.Fatalf("%s:%d: %s must use the JSON (exec) form, so no shell is needed: %v", file, n+1, instr, err)
			}
			if strings.ToUpper(instr) == "CMD" {
				cfg.Cmd = argv
			} else {
				cfg.Entrypoint = argv
			}
		default:
			t.Fatalf("%s:%d: instruction %s is not interpreted by this test; extend dockerfileImage", file, n+1, instr)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	goos, arch, _ := strings.Cut(platform, "/")
	cf.OS, cf.Architecture, cf.Config = goos, arch, cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img, base
}

// TestMakeBuildStatic: `make build` gives a static binary with the version
// from VERSION.
func TestMakeBuildStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("NOTICE: make is not installed; `make build` was NOT checked")
	}
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	cmd := exec.CommandContext(t.Context(), "make", "--no-print-directory", "build", "BIN="+bin, "VERSION=v9.9.9-make")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	checkStatic(t, bin)
	if v := versionOf(t, bin); !strings.HasPrefix(v+" ", "rdsproxy v9.9.9-make ") {
		t.Errorf("make build binary reports %q, want rdsproxy v9.9.9-make", v)
	}
}

// TestVersionWithoutLdflags: a plain `go build` (or go install) still
// reports which commit it was built from.
func TestVersionWithoutLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if err := exec.Command("git", "rev-parse", "HEAD").Run(); err != nil {
		t.Skip("NOTICE: not a git checkout (or no git); the VCS fallback was NOT checked")
	}
	bin := filepath.Join(t.TempDir(), "rdsproxy")
	// -buildvcs=true: go build's default (auto) may be turned off by GOFLAGS.
	goBuild(t, bin, []string{"CGO_ENABLED=0"}, "-trimpath", "-buildvcs=true")
	v := versionOf(t, bin)
	m := regexp.MustCompile(`^rdsproxy (v0\.0\.0-\d{14}-|dev-)([0-9a-f]{12})(\+dirty|-dirty)?(\s|$)`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("a build without -X main.version reports %q; want a pseudo-version naming the commit", v)
	}
	if err := exec.Command("git", "cat-file", "-e", m[2]+"^{commit}").Run(); err != nil {
		t.Errorf("version %q names %s, which is not a commit here", v, m[2])
	}
	if got := buildVersion("v1.0.0"); got != "v1.0.0" {
		t.Errorf("buildVersion(v1.0.0) = %q", got)
	}
}
