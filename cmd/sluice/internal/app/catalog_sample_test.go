package app

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// catalog.include_sample adds one own type to the sample marketplace types
// instead of replacing them; without it the configured types stand alone.
func TestIncludeSampleAddsOwnTypeToTheDemo(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	schema := `{"type":"object","required":["ticket_id"],"properties":{"ticket_id":{"type":"integer"}}}`
	if err := os.WriteFile(filepath.Join(dir, "ticket_opened.json"), []byte(schema), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `catalog:
  schemas_dir: ` + dir + `
  include_sample: %s
  types:
    ticket_opened:
      key: '"ticket:" + (.data.ticket_id|tostring)'
      body: '{id: .event.data.ticket_id}'
      crm: {object: tickets, path: /api/tickets}
`
	for _, tc := range []struct {
		include string
		want    []string
		without []string
	}{
		{"true", []string{"ticket_opened", "customer_signed_up", "car_listed"}, nil},
		{"false", []string{"ticket_opened"}, []string{"customer_signed_up"}},
	} {
		path := filepath.Join(dir, "sluice-"+tc.include+".yaml")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(cfg, tc.include)), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path, "all")
		if err != nil {
			t.Fatal(err)
		}
		cat, err := loadCatalog(c.Catalog)
		if err != nil {
			t.Fatalf("include_sample %s: %v", tc.include, err)
		}
		names := cat.Names()
		for _, n := range tc.want {
			if !slices.Contains(names, n) {
				t.Errorf("include_sample %s: %s missing from %v", tc.include, n, names)
			}
		}
		for _, n := range tc.without {
			if slices.Contains(names, n) {
				t.Errorf("include_sample %s: %s present in %v", tc.include, n, names)
			}
		}
		if usesSample(c.Catalog) != (tc.include == "true") {
			t.Errorf("include_sample %s: usesSample %v (seeds the sample database)", tc.include, usesSample(c.Catalog))
		}
	}
}
