package contract

import (
	"encoding/json"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// JSON and YAML spell every field alike, as the configuration file does.
func TestTargetSpelling(t *testing.T) {
	tg := Target{Name: "orders", Endpoint: "h:5432", Region: "eu-west-1", Auth: AuthIAM, TLS: TLSVerifyFull,
		Database: "app", LocalPort: 15432, Users: []string{"alice"}, ReadOnly: true, Principals: []string{"arn:*"}, Source: "static"}
	j, err := json.Marshal(tg)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(tg)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML map[string]any
	if err := json.Unmarshal(j, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(y, &fromYAML); err != nil {
		t.Fatal(err)
	}
	for k := range fromJSON {
		if _, ok := fromYAML[k]; !ok {
			t.Errorf("JSON key %q is not a YAML key (YAML: %s)", k, y)
		}
	}
	if len(fromJSON) != len(fromYAML) || !strings.Contains(string(j), `"local-port":15432`) || !strings.Contains(string(j), `"read-only":true`) {
		t.Errorf("JSON %s, YAML %s", j, y)
	}
}

// The JSON of servers from before the spelling was unified still reads.
func TestTargetReadsOldSpelling(t *testing.T) {
	var tg Target
	if err := json.Unmarshal([]byte(`{"name":"orders","local_port":15432,"read_only":true}`), &tg); err != nil {
		t.Fatal(err)
	}
	if tg.Name != "orders" || tg.LocalPort != 15432 || !tg.ReadOnly {
		t.Fatalf("decoded %+v", tg)
	}
}
