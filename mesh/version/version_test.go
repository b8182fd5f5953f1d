package version

import (
	"regexp"
	"testing"
)

// micro.AddService refuses a version that is not semver; this is its regexp.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

func TestStringIsSemver(t *testing.T) {
	defer func(c string) { Commit = c }(Commit)
	for _, tc := range []struct{ commit, want string }{
		{"", "0.1.0-dev"},
		{"6ceb2e3", "0.1.0+6ceb2e3"},
		{"6ceb2e3-dirty", "0.1.0+6ceb2e3-dirty"},
		{"v1.2_3 x..y", "0.1.0+v1.2-3-x.y"},
		{"dev", "0.1.0+dev"},
		{"...", "0.1.0-dev"},
	} {
		Commit = tc.commit
		got := String()
		if got != tc.want || !semver.MatchString(got) {
			t.Errorf("Commit %q: %q (want %q, semver %v)", tc.commit, got, tc.want, semver.MatchString(got))
		}
	}
}
