// Package version is Sluice's one version: `sluice --version`, every micro
// service ($SRV.INFO, `sluice status`, `nats service ls`) and the metrics
// report the same string.
package version

import (
	"regexp"
	"strings"
)

// Base is the release. Micro services need semantic versions, so the build
// (commit) goes after a '+' as build metadata.
const Base = "0.1.0"

// Commit is set at build time:
//
//	go build -ldflags "-X sluice.dev/mesh/version.Commit=$(git describe --always --dirty)"
//
// Empty (go run, go test): the version is Base+"-dev".
var Commit = ""

var notMeta = regexp.MustCompile(`[^0-9A-Za-z.-]+`)

// String is the version everything reports: "0.1.0+6ceb2e3-dirty" for a
// build of commit 6ceb2e3, "0.1.0-dev" without one. Always valid semver.
func String() string {
	c := strings.Trim(notMeta.ReplaceAllString(Commit, "-"), ".-")
	for strings.Contains(c, "..") {
		c = strings.ReplaceAll(c, "..", ".")
	}
	if c == "" {
		return Base + "-dev"
	}
	return Base + "+" + c
}
