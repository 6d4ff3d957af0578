package ssmendpoint

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
)

// The two AWS-owned port-forwarding documents (docs/ssm-protocol.md §2.1): their
// parameters with defaults and allowed patterns, and the properties the
// agent receives after substitution. The port pattern is the documents'
// 1–65535 (0 allowed for localPortNumber); the host pattern is an
// assumption (any host name or address without spaces or quotes).
type docParam struct {
	def      string // "" with required: no default
	required bool
	pattern  *regexp.Regexp
}

type document struct {
	params map[string]docParam
	// properties are the document's properties; "{{ name }}" is replaced.
	properties map[string]string
}

var (
	portPattern      = regexp.MustCompile(`^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)
	localPortPattern = regexp.MustCompile(`^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)
	hostPattern      = regexp.MustCompile(`^[A-Za-z0-9._:\[\]-]{1,253}$`)

	documents = map[string]document{
		docPort: {
			params: map[string]docParam{
				"portNumber":      {def: "80", pattern: portPattern},
				"localPortNumber": {def: "0", pattern: localPortPattern},
			},
			properties: map[string]string{"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"},
		},
		docRemoteHost: {
			params: map[string]docParam{
				"host":            {required: true, pattern: hostPattern},
				"portNumber":      {def: "80", pattern: portPattern},
				"localPortNumber": {def: "0", pattern: localPortPattern},
			},
			properties: map[string]string{"host": "{{ host }}", "portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"},
		},
	}
)

// pinnedDocument is a custom Session document like the Terraform module's:
// sessionType Port, the destination port fixed in its properties, only
// localPortNumber as a parameter.
func pinnedDocument(port int) document {
	return document{
		params:     map[string]docParam{"localPortNumber": {def: "0", pattern: localPortPattern}},
		properties: map[string]string{"portNumber": fmt.Sprint(port), "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"},
	}
}

// resolve validates StartSession parameters against the document, as the
// service does, and returns the substituted properties.
func (d document) resolve(given map[string][]string) (map[string]string, error) {
	invalid := func(format string, args ...any) error {
		return &apiError{http.StatusBadRequest, "InvalidParameters", fmt.Sprintf(format, args...)}
	}
	names := make([]string, 0, len(given))
	for name := range given {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, ok := d.params[name]; !ok {
			return nil, invalid("Parameter %q is not defined in the document.", name)
		}
	}
	values := map[string]string{}
	for name, p := range d.params {
		v, ok := given[name]
		switch {
		case !ok && p.required:
			return nil, invalid("Parameter %q is required.", name)
		case !ok:
			values[name] = p.def
			continue
		case len(v) != 1:
			return nil, invalid("Parameter %q takes exactly one value, got %d.", name, len(v))
		case !p.pattern.MatchString(v[0]):
			return nil, invalid("Parameter %q value %q does not match the allowed pattern %s.", name, v[0], p.pattern)
		}
		values[name] = v[0]
	}
	props := make(map[string]string, len(d.properties))
	for k, tmpl := range d.properties {
		for name, v := range values {
			tmpl = strings.ReplaceAll(tmpl, "{{ "+name+" }}", v)
		}
		props[k] = tmpl
	}
	return props, nil
}
