package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// fileKeys are configuration-file keys that are not flags: the server's
// static targets, and the client's named servers.
var fileKeys = []string{"targets", "servers", "default-server"}

// defaultConfigPath is the user's configuration file, read when present:
// $XDG_CONFIG_HOME/rdsproxy/config.yaml, else $HOME/.config/rdsproxy/config.yaml
// (the XDG base directory specification ignores a relative XDG_CONFIG_HOME).
// It is the same on macOS, where os.UserConfigDir would be
// ~/Library/Application Support, because the README and --help name
// ~/.config. $HOME, not the password database (kong's "~" expansion): a
// shell, a test or a container that sets HOME expects the file there. It
// is "" when neither variable says where home is.
func defaultConfigPath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "rdsproxy", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "rdsproxy", "config.yaml")
}

// configFlag is --config FILE (or RDSPROXY_CONFIG). Before kong resolves
// flags, the file it names joins the user's file in the parse's
// fileResolver, and beats it key by key.
type configFlag string

// BeforeResolve adds the named file to files.
func (configFlag) BeforeResolve(kctx *kong.Context, trace *kong.Path, files *fileResolver) error {
	path, _ := kctx.FlagValue(trace.Flag).(configFlag)
	if path == "" {
		return nil
	}
	return files.add(path.path())
}

// path is the file the flag names, with a leading ~/ expanded.
func (c configFlag) path() string { return expandHome(string(c)) }

// expandHome replaces a leading ~/ with $HOME, for a path a shell did not
// expand (RDSPROXY_CONFIG='~/x.yaml').
func expandHome(path string) string {
	rest, ok := strings.CutPrefix(path, "~/")
	if !ok {
		return path
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return path
	}
	return filepath.Join(home, rest)
}

// fileResolver supplies flag values from the YAML configuration files:
// the user's file, then the one --config names. A later file wins key by
// key (see Resolve), and its servers entries join the earlier file's,
// replacing one of the same name whole (an entry says how to reach one
// server; half of one and half of another reaches neither).
//
// Flags whose environment variable is set are left alone: kong applies
// environment values before resolvers, so without this check a file would
// beat the environment.
type fileResolver struct {
	userPath string       // where the user's file is looked for ("" when home is unknown)
	files    []configFile // the files read, in order
}

// configFile is one configuration file's decoded values.
type configFile struct {
	path   string
	values map[string]any
}

// newFileResolver reads the user's configuration file, when there is one.
func newFileResolver() (*fileResolver, error) {
	r := &fileResolver{userPath: defaultConfigPath()}
	if r.userPath == "" {
		return r, nil
	}
	if err := r.add(r.userPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return r, nil
}

// add reads the file at path and lays it over the files read before.
func (r *fileResolver) add(path string) error {
	if slices.ContainsFunc(r.files, func(f configFile) bool { return f.path == path }) {
		return nil // RDSPROXY_CONFIG naming the user's own file
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("configuration file: %w", err)
	}
	defer f.Close()
	values, err := decodeYAML(f)
	if err == nil {
		err = checkShape(values)
	}
	if err != nil {
		return fmt.Errorf("configuration file %s: %w", path, err)
	}
	r.files = append(r.files, configFile{path: path, values: values})
	return nil
}

// serverNames are the names of every file's servers, sorted: what --use
// can name.
func (r *fileResolver) serverNames() []string {
	names := map[string]bool{}
	for _, f := range r.files {
		servers, _ := f.values["servers"].(map[string]any)
		for name := range servers {
			names[name] = true
		}
	}
	return slices.Sorted(maps.Keys(names))
}

// decodeYAML reads a YAML mapping and normalises its values to what
// encoding/json would produce, which kong's decoders understand.
func decodeYAML(r io.Reader) (map[string]any, error) {
	var raw map[string]any
	if err := yaml.NewDecoder(r).Decode(&raw); err != nil {
		if err == io.EOF {
			return map[string]any{}, nil
		}
		return nil, err
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	values := map[string]any{}
	if err := json.Unmarshal(b, &values); err != nil {
		return nil, err
	}
	return values, nil
}

// checkShape rejects a servers: section that is not a mapping of mappings
// and a default-server that is not a name, which merge and server rely on.
func checkShape(values map[string]any) error {
	if v, present := values["default-server"]; present {
		if _, ok := v.(string); !ok {
			return errors.New("default-server must be a server name")
		}
	}
	v, present := values["servers"]
	if !present {
		return nil
	}
	servers, ok := v.(map[string]any)
	if !ok {
		return errors.New("servers must map server names to their settings")
	}
	for name, entry := range servers {
		if _, ok := entry.(map[string]any); !ok {
			return fmt.Errorf("servers.%s must be a mapping of flag names", name)
		}
	}
	return nil
}

// Validate rejects keys that name no flag, so typos do not pass silently.
func (r *fileResolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	for _, k := range fileKeys {
		known[k] = true
	}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			known[f.Name] = true
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	for _, f := range r.files {
		if err := f.unknownKeys(known); err != nil {
			return fmt.Errorf("configuration file %s: %w", f.path, err)
		}
	}
	return nil
}

// unknownKeys names the file's keys that are not known, at the top level
// and in its servers entries.
func (f configFile) unknownKeys(known map[string]bool) error {
	if err := unknownKeys("", f.values, known); err != nil {
		return err
	}
	servers, _ := f.values["servers"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		if err := unknownKeys("servers."+name+".", servers[name].(map[string]any), known); err != nil {
			return err
		}
	}
	return nil
}

func unknownKeys(prefix string, values map[string]any, known map[string]bool) error {
	var unknown []string
	for k := range values {
		if !known[k] || (prefix != "" && slices.Contains(fileKeys, k)) {
			unknown = append(unknown, prefix+k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown keys %s (keys are the long flag names)", strings.Join(unknown, ", "))
	}
	return nil
}

// Resolve returns the files' value for flag unless its env var is set.
// The later file wins (the one --config names): within each file, the
// selected server's entry (--use, else default-server) beats the top
// level, and an entry counts only in the last file that defines that
// server. So a named file's top-level via: direct beats the user's server
// entry's via: ssm.
func (r *fileResolver) Resolve(kctx *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	// The server is checked first so that a --use naming no server is an
	// error whichever flags the environment sets.
	entry, owner, err := r.server(kctx)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(flag.Envs, func(e string) bool { _, set := os.LookupEnv(e); return set }) {
		return nil, nil
	}
	v, ok := r.lookup(flag.Name, entry, owner)
	if !ok {
		return nil, nil
	}
	if n, isNumber := v.(float64); isNumber && flag.Value.Target.Type() == reflect.TypeFor[time.Duration]() {
		// kong would take it for nanoseconds: refresh-interval: 30 was 30ns.
		return nil, fmt.Errorf("configuration file: %v has no unit; write it with one, such as %vs or %vm", n, n, n)
	}
	v, err = fileValue(flag, v)
	if err != nil {
		return nil, err
	}
	// A map flag may be written as a list of KEY=VALUE strings.
	if list, isList := v.([]any); isList && flag.Value.Target.Kind() == reflect.Map {
		parts := make([]string, len(list))
		for i, item := range list {
			parts[i] = fmt.Sprint(item)
		}
		return strings.Join(parts, ","), nil
	}
	return v, nil
}

// fileValue is v as flag takes it, or an error in the file's terms for a
// value kong would misread or reject in Go's: a list or map for a flag
// that takes one value, text or a fraction for a whole number, anything
// but true or false for a switch. A number or a switch's value for a
// text flag (an AWS profile named 123456789012) is taken as its text.
func fileValue(flag *kong.Flag, v any) (any, error) {
	t := flag.Value.Target.Type()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	_, isList := v.([]any)
	_, isMap := v.(map[string]any)
	switch kind := t.Kind(); {
	case kind == reflect.Slice || kind == reflect.Map:
	case isList || isMap:
		return nil, errors.New("configuration file: give one value here, not a list or a map")
	case kind == reflect.String:
		switch x := v.(type) {
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), nil
		case bool:
			return strconv.FormatBool(x), nil
		}
	case kind == reflect.Bool:
		switch x := v.(type) {
		case string:
			if _, err := strconv.ParseBool(x); err != nil {
				return nil, fmt.Errorf("configuration file: %q is neither true nor false", x)
			}
		case float64:
			return nil, fmt.Errorf("configuration file: %v is neither true nor false", x)
		}
	case kind >= reflect.Int && kind <= reflect.Int64 && t != reflect.TypeFor[time.Duration]():
		switch x := v.(type) {
		case string:
			if _, err := strconv.ParseInt(x, 0, t.Bits()); err != nil { // as kong parses it: 0x10 and 1_000 too
				return nil, fmt.Errorf("configuration file: %q is not a whole number", x)
			}
		case float64:
			if x != math.Trunc(x) {
				return nil, fmt.Errorf("configuration file: %v is not a whole number", x)
			}
		case bool:
			return nil, fmt.Errorf("configuration file: %v is not a number", x)
		}
	}
	return v, nil
}

// lookup finds key in the files, the last first: in each, the server
// entry when that file is its owner, then the top level.
func (r *fileResolver) lookup(key string, entry map[string]any, owner int) (any, bool) {
	for i := len(r.files) - 1; i >= 0; i-- {
		if i == owner {
			if v, ok := entry[key]; ok {
				return v, true
			}
		}
		if v, ok := r.files[i].values[key]; ok && !slices.Contains(fileKeys, key) {
			return v, true
		}
	}
	return nil, false
}

// server is the settings of the server selected by --use (or
// default-server), and the index of the last file that defines it; nil
// and -1 when none is selected. default-server comes from the last file
// read: with --config, the named file's (a file that names the setup
// does not inherit the user's default server, whose profile and region
// belong to another one). Those entries say how a client reaches an
// rdsproxy server, so `rdsproxy server` itself never takes them: a
// laptop's default entry (say, region: eu-west-1) would otherwise change
// where a server started there discovers.
func (r *fileResolver) server(kctx *kong.Context) (map[string]any, int, error) {
	if isServerCommand(kctx) {
		return nil, -1, nil
	}
	name, source := "", "--use"
	for _, f := range kctx.Flags() {
		if f.Name == "use" {
			name, _ = kctx.FlagValue(f).(string)
		}
	}
	if name == "" && len(r.files) > 0 {
		name, _ = r.files[len(r.files)-1].values["default-server"].(string)
		source = "default-server"
	}
	if name == "" {
		return nil, -1, nil
	}
	for i := len(r.files) - 1; i >= 0; i-- {
		servers, _ := r.files[i].values["servers"].(map[string]any)
		if entry, ok := servers[name].(map[string]any); ok {
			return entry, i, nil
		}
	}
	return nil, -1, &unknownServerError{name: name, source: source, have: r.serverNames(), files: r.paths(), userPath: r.userPath}
}

// paths are the files read, in order.
func (r *fileResolver) paths() []string {
	paths := make([]string, len(r.files))
	for i, f := range r.files {
		paths[i] = f.path
	}
	return paths
}

// unknownServerError is --use (or default-server) naming no server of the
// configuration files.
type unknownServerError struct {
	name, source string   // the name, and the flag or key that gave it
	have         []string // the servers the files define
	files        []string // the files read
	userPath     string   // where the user's file is looked for
}

func (e *unknownServerError) Error() string {
	switch {
	case len(e.have) > 0 && len(e.files) == 1:
		return fmt.Sprintf("configuration file has no server %q (it has: %s)", e.name, strings.Join(e.have, ", "))
	case len(e.have) > 0:
		return fmt.Sprintf("no configuration file has a server %q (they have: %s; read: %s)",
			e.name, strings.Join(e.have, ", "), strings.Join(e.files, ", "))
	case len(e.files) > 0:
		return fmt.Sprintf("%s %s: no configuration file defines servers (read: %s)", e.source, e.name, strings.Join(e.files, ", "))
	}
	where := e.userPath
	if where == "" {
		where = "$HOME/.config/rdsproxy/config.yaml, but HOME is not set"
	}
	return fmt.Sprintf("%s %s: no configuration file defines servers (none found: looked for %s; --config FILE or RDSPROXY_CONFIG names another)", e.source, e.name, where)
}
