package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// The developer permissions in README.md and security.md agree with the
// Terraform modules, which are the one source of truth: every action the
// developer policy grants, the SSO session condition, and the RBAC verbs
// on pods/portforward.
func TestDocsAgreeWithTerraform(t *testing.T) {
	policy := readFile(t, "terraform/modules/aws-server/developer.tf")
	rbac := readFile(t, "terraform/modules/kubernetes/rbac.tf")
	readme := section(t, readFile(t, "README.md"), "IAM a developer needs", "### Direct")
	security := section(t, readFile(t, "security.md"), "Developer:", "## Assumptions")

	for _, action := range slices.Compact(slices.Sorted(slices.Values(quoted(t, policy, `actions\s*=\s*\[([^\]]*)\]`)))) {
		if !strings.Contains(readme, "`"+action+"`") {
			t.Errorf("README.md's developer IAM table lacks %s, which the module grants", action)
		}
		if strings.HasPrefix(action, "ssm") && !strings.Contains(security, action) {
			t.Errorf("security.md's developer permissions lack %s, which the module grants", action)
		}
	}
	for _, cond := range quoted(t, policy, `variable\s*=\s*("ssm:resourceTag/aws:[^"]*")`) {
		if !strings.Contains(readme, cond) {
			t.Errorf("README.md does not state the condition on %s that the module sets", cond)
		}
	}
	rule := regexp.MustCompile(`resources\s*=\s*\["pods/portforward"\]\s*verbs\s*=\s*\[([^\]]*)\]`).FindStringSubmatch(rbac)
	if rule == nil {
		t.Fatal("rbac.tf has no pods/portforward rule")
	}
	var verbs []string
	for _, v := range quoted(t, rule[1], `(".*")`) {
		verbs = append(verbs, "`"+v+"`")
	}
	if want := strings.Join(verbs, " and ") + " on `pods/portforward`"; !strings.Contains(readme, want) {
		t.Errorf("README.md's kube RBAC does not say %s", want)
	}
	if want := strings.Join(verbs, "/") + " on `pods/portforward`"; !strings.Contains(security, want) {
		t.Errorf("security.md's kube RBAC does not say %s", want)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the text between two markers, with runs of white space as
// one space (so line breaks do not matter).
func section(t *testing.T, text, from, to string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, from)
	body, _, ok2 := strings.Cut(rest, to)
	if !ok || !ok2 {
		t.Fatalf("no section from %q to %q", from, to)
	}
	return strings.Join(strings.Fields(body), " ")
}

// quoted returns the double-quoted strings inside every match of re's first group.
func quoted(t *testing.T, text, re string) []string {
	t.Helper()
	var out []string
	for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(text, -1) {
		for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[1], -1) {
			out = append(out, q[1])
		}
	}
	if len(out) == 0 {
		t.Fatalf("nothing matches %s", re)
	}
	return out
}

// The README and security.md link nothing outside the repository, and
// every file and heading they link to exists (a newcomer's clone is all
// they need).
func TestDocsLinkInsideRepository(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, doc := range []string{"README.md", "security.md"} {
		text := readFile(t, doc)
		anchors := headingAnchors(text)
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			switch {
			case strings.HasPrefix(target, "#"):
				if !anchors[target[1:]] {
					t.Errorf("%s links to %s, which no heading of it has", doc, target)
				}
			case strings.Contains(target, "://"), strings.HasPrefix(target, "mailto:"):
				t.Errorf("%s links outside the repository: %s", doc, target)
			default:
				path, _, _ := strings.Cut(target, "#")
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s links to %s, which is not in the repository: %v", doc, target, err)
				}
			}
		}
	}
}

// headingAnchors are the anchors GitHub gives a Markdown file's headings:
// lower case, spaces as hyphens, other punctuation dropped.
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.*)$`).FindAllStringSubmatch(text, -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-', r == '_', unicode.IsLetter(r), unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}
