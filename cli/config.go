package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// fileKeys are configuration-file keys that are not flags: the server's
// static targets, and the client's named servers.
var fileKeys = []string{"targets", "servers", "default-server"}

// defaultConfigPath is the user's configuration file, read when present:
// $XDG_CONFIG_HOME/rdsproxy/config.yaml, else ~/.config/rdsproxy/config.yaml
// (the XDG base directory specification ignores a relative XDG_CONFIG_HOME).
func defaultConfigPath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "rdsproxy", "config.yaml")
	}
	return "~/.config/rdsproxy/config.yaml"
}

// fileResolver supplies flag values from the YAML configuration file,
// except for flags whose environment variable is set: kong applies
// environment values before resolvers, so without this check the file
// would beat the environment.
type fileResolver struct {
	values map[string]any
}

// loadConfigFile is kong's configuration loader for --config.
func loadConfigFile(r io.Reader) (kong.Resolver, error) {
	values, err := decodeYAML(r)
	if err != nil {
		return nil, err
	}
	return &fileResolver{values: values}, nil
}

// decodeYAML reads a YAML mapping and normalises its values to what
// encoding/json would produce, which kong's decoders understand.
func decodeYAML(r io.Reader) (map[string]any, error) {
	var raw map[string]any
	if err := yaml.NewDecoder(r).Decode(&raw); err != nil {
		if err == io.EOF {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("configuration file: %w", err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("configuration file: %w", err)
	}
	var values map[string]any
	if err := json.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("configuration file: %w", err)
	}
	return values, nil
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
	if err := unknownKeys("", r.values, known); err != nil {
		return err
	}
	servers, ok := r.values["servers"].(map[string]any)
	if _, present := r.values["servers"]; present && !ok {
		return errors.New("configuration file: servers must map server names to their settings")
	}
	for name, entry := range servers {
		settings, ok := entry.(map[string]any)
		if !ok {
			return fmt.Errorf("configuration file: servers.%s must be a mapping of flag names", name)
		}
		if err := unknownKeys("servers."+name+".", settings, known); err != nil {
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
		return fmt.Errorf("configuration file: unknown keys %s (keys are the long flag names)", strings.Join(unknown, ", "))
	}
	return nil
}

// Resolve returns the file's value for flag unless its env var is set:
// from the selected server's entry (--use, else default-server) first,
// then from the top level.
func (r *fileResolver) Resolve(kctx *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	if slices.ContainsFunc(flag.Envs, func(e string) bool { _, set := os.LookupEnv(e); return set }) {
		return nil, nil
	}
	entry, err := r.server(kctx)
	if err != nil {
		return nil, err
	}
	v, ok := entry[flag.Name]
	if !ok {
		v, ok = r.values[flag.Name]
	}
	if !ok {
		return nil, nil
	}
	if n, isNumber := v.(float64); isNumber && flag.Value.Target.Type() == reflect.TypeFor[time.Duration]() {
		// kong would take it for nanoseconds: refresh-interval: 30 was 30ns.
		return nil, fmt.Errorf("configuration file: %v has no unit; write it with one, such as %vs or %vm", n, n, n)
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

// server is the settings of the server selected by --use (or the file's
// default-server), or nil. Those entries say how a client reaches an
// rdsproxy server, so `rdsproxy server` itself never takes them: a
// laptop's default entry (say, region: eu-west-1) would otherwise change
// where a server started there discovers.
func (r *fileResolver) server(kctx *kong.Context) (map[string]any, error) {
	if strings.HasPrefix(kctx.Command(), "server") {
		return nil, nil
	}
	name := ""
	for _, f := range kctx.Flags() {
		if f.Name == "use" {
			name, _ = kctx.FlagValue(f).(string)
		}
	}
	servers, _ := r.values["servers"].(map[string]any)
	if name == "" {
		name, _ = r.values["default-server"].(string)
	}
	if name == "" || servers == nil {
		return nil, nil
	}
	entry, ok := servers[name].(map[string]any)
	if !ok {
		return nil, &unknownServerError{name: name, have: slices.Sorted(maps.Keys(servers))}
	}
	return entry, nil
}

// unknownServerError is --use (or default-server) naming no server of the
// configuration file.
type unknownServerError struct {
	name string
	have []string
}

func (e *unknownServerError) Error() string {
	return fmt.Sprintf("configuration file has no server %q (it has: %s)", e.name, strings.Join(e.have, ", "))
}

// readFileSection decodes one non-flag key of the configuration file.
func readFileSection(path, key string, into any) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var doc map[string]yaml.Node
	if err := yaml.NewDecoder(f).Decode(&doc); err != nil {
		if err == io.EOF {
			return nil
		}
		return fmt.Errorf("configuration file %s: %w", path, err)
	}
	node, ok := doc[key]
	if !ok {
		return nil
	}
	if err := node.Decode(into); err != nil {
		return fmt.Errorf("configuration file %s: %s: %w", path, key, err)
	}
	return nil
}
