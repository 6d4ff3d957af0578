package iamtoken_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/iamtoken"
)

// FuzzParse checks that Parse never panics, that a parsed token satisfies
// the invariants Check relies on, and that errors never echo long runs of
// the input. The committed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(mustSign(f, testEndpoint, testRegion, "u", testCreds("sess"), testTime, 15*time.Minute))
	f.Add("h:1?Action=connect")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := iamtoken.Parse(s)
		if err != nil {
			if tok != nil {
				t.Fatal("Parse returned a token and an error")
			}
			if len(s) > 80 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the whole input")
			}
			return
		}
		if tok.Port < 1 || tok.Port > 65535 || tok.Lifetime < time.Second || tok.DBUser == "" {
			t.Fatalf("parsed token violates invariants: %+v", tok)
		}
		_ = tok.Check(iamtoken.Expect{Endpoint: tok.Endpoint(), User: tok.DBUser, Now: tok.SignedAt})
	})
}
