package schemas_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/envelope"
	"sluice.dev/schemas"
)

func loadConfig(t *testing.T) catalog.Config {
	t.Helper()
	var cfg catalog.Config
	dec := yaml.NewDecoder(bytes.NewReader(schemas.MarketplaceCatalog()))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg))
	return cfg
}

func compile(t *testing.T) (catalog.Config, *catalog.Catalog) {
	t.Helper()
	cfg := loadConfig(t)
	cat, err := catalog.Compile(cfg, cfg.SchemaFS(schemas.Marketplace()))
	require.NoError(t, err)
	return cfg, cat
}

func readEnvelope(t *testing.T, path string) *envelope.Envelope {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	e, err := envelope.Decode(b)
	require.NoError(t, err, path)
	return e
}

func TestCatalogParsesAndCompiles(t *testing.T) {
	cfg, cat := compile(t)
	require.Empty(t, cfg.SchemasDir, "schemas_dir must be omitted so the embedded schemas are used")
	require.Equal(t, sortedTypes(), cfg.Names())
	require.Equal(t, sortedTypes(), cat.Names())

	// Every schema file belongs to a type and every type has one.
	jsonFiles, err := fs.Glob(schemas.Marketplace(), "*.json")
	require.NoError(t, err)
	var want []string
	for _, n := range sortedTypes() {
		want = append(want, n+".json")
	}
	require.ElementsMatch(t, want, jsonFiles)
	_, err = fs.Stat(schemas.Marketplace(), "customer_signed_up.json")
	require.NoError(t, err, "schemas are at the top of Marketplace()")
}

func sortedTypes() []string {
	ts := append([]string(nil), schemas.Types()...)
	sort.Strings(ts)
	return ts
}

// TestCRMTargets pins the contract the load generator and the CRM stand-in
// rely on.
func TestCRMTargets(t *testing.T) {
	cfg := loadConfig(t)
	type target struct{ object, mode, path, updatePath string }
	want := map[string]target{
		"customer_signed_up":  {"contacts", catalog.ModeUpsert, "/api/contacts", "/api/contacts/{crm_id}"},
		"customer_updated":    {"contacts", catalog.ModeUpsert, "/api/contacts", "/api/contacts/{crm_id}"},
		"car_listed":          {"listings", catalog.ModeUpsert, "/api/listings", "/api/listings/{crm_id}"},
		"lead_created":        {"leads", catalog.ModeUpsert, "/api/leads", "/api/leads/{crm_id}"},
		"lead_status_changed": {"leads", catalog.ModeUpdate, "", "/api/leads/{crm_id}"},
		"appointment_booked":  {"activities", catalog.ModeCreate, "/api/activities", ""},
	}
	for name, w := range want {
		c := cfg.Types[name].CRM
		require.Equal(t, w, target{c.Object, c.Mode, c.Path, c.UpdatePath}, name)
	}
	var lookups []string
	for _, name := range cfg.Names() {
		for _, l := range cfg.Types[name].Lookups {
			lookups = append(lookups, fmt.Sprintf("%s.%s=%s(%s)%v", name, l.Name, l.Table, l.KeyColumn, !l.Optional))
		}
	}
	require.Equal(t, []string{
		"appointment_booked.car=cars(id)false",
		"car_listed.car=cars(id)true",
		"car_listed.seller=customers(id)false",
		"customer_updated.customer=customers(id)false",
		"lead_created.customer=customers(id)false",
		"lead_created.car=cars(id)true",
		"lead_status_changed.lead=leads(id)true",
	}, lookups)
}

func TestValidSamples(t *testing.T) {
	_, cat := compile(t)
	wantKey := map[string]string{
		"customer_signed_up": "customer:7", "customer_updated": "customer:7", "car_listed": "car:12",
		"lead_created": "customer:7", "lead_status_changed": "customer:7", "appointment_booked": "customer:7",
	}
	for _, name := range schemas.Types() {
		t.Run(name, func(t *testing.T) {
			e := readEnvelope(t, filepath.Join("testdata", "valid", name+".json"))
			require.Equal(t, name, e.Type)
			require.Empty(t, e.Key, "samples leave the key to the type's key expression")
			require.NoError(t, cat.Prepare(e))
			require.Equal(t, wantKey[name], e.Key)
		})
	}
}

type invalidCase struct {
	Name  string          `json:"name"`
	Field string          `json:"field"`
	Event json.RawMessage `json:"event"`
}

func TestInvalidSamples(t *testing.T) {
	_, cat := compile(t)
	for _, name := range schemas.Types() {
		b, err := os.ReadFile(filepath.Join("testdata", "invalid", name+".json"))
		require.NoError(t, err)
		var cases []invalidCase
		require.NoError(t, json.Unmarshal(b, &cases))
		require.NotEmpty(t, cases, name)
		for _, tc := range cases {
			t.Run(name+"/"+tc.Name, func(t *testing.T) {
				e, err := envelope.Decode(tc.Event)
				require.NoError(t, err)
				err = cat.Prepare(e)
				var inv *envelope.Invalid
				require.ErrorAs(t, err, &inv)
				var fields []string
				for _, f := range inv.Fields {
					fields = append(fields, f.Field)
				}
				require.Contains(t, fields, tc.Field, "errors: %v", inv)
			})
		}
	}
}

// stubValue is a plausible column value of the right JSON type.
func stubValue(col string) any {
	switch col {
	case "year":
		return 2019
	case "km_driven":
		return 42000
	case "price":
		return 645000
	case "car_id":
		return 12
	}
	return "stub " + col
}

func runJQ(t *testing.T, expr string, in any) any {
	t.Helper()
	code, err := catalog.CompileJQ(expr)
	require.NoError(t, err, expr)
	v, ok := code.Code().Run(in).Next()
	require.True(t, ok, "no output from %s", expr)
	if err, isErr := v.(error); isErr {
		require.NoError(t, err, expr)
	}
	return v
}

func bodyInput(t *testing.T, e *envelope.Envelope, lookups map[string]any) any {
	t.Helper()
	ev, err := catalog.AsJQ(e)
	require.NoError(t, err)
	return map[string]any{"event": ev, "lookups": lookups}
}

func TestJQExpressions(t *testing.T) {
	cfg, cat := compile(t)
	for _, name := range cfg.Names() {
		t.Run(name, func(t *testing.T) {
			def := cfg.Types[name]
			e := readEnvelope(t, filepath.Join("testdata", "valid", name+".json"))
			require.NoError(t, cat.Prepare(e))
			ev, err := catalog.AsJQ(e)
			require.NoError(t, err)

			stubbed := map[string]any{}
			nulled := map[string]any{}
			for _, l := range def.Lookups {
				v := runJQ(t, l.From, ev)
				require.NotNil(t, v, "lookup %s: from %s gave null on the valid sample", l.Name, l.From)
				row := map[string]any{}
				for _, c := range l.Columns {
					row[c] = stubValue(c)
				}
				stubbed[l.Name] = row
				if l.Optional {
					nulled[l.Name] = nil
				} else {
					nulled[l.Name] = row
				}
			}
			if def.CRM.IDKey != "" {
				id := runJQ(t, def.CRM.IDKey, ev)
				require.IsType(t, "", id)
				require.Regexp(t, `^(lead|appointment):[0-9]+$`, id)
			}
			require.NotEmpty(t, def.Body, "every sample type maps its body")

			body := runJQ(t, def.Body, bodyInput(t, e, stubbed))
			obj, ok := body.(map[string]any)
			require.True(t, ok, "body is a %T, want an object", body)
			for k, v := range obj {
				require.NotNil(t, v, "body field %s is null with every lookup present", k)
			}
			_, err = json.Marshal(obj)
			require.NoError(t, err)

			// Optional lookups may be null: the body must still be an object.
			body = runJQ(t, def.Body, bodyInput(t, e, nulled))
			require.IsType(t, map[string]any{}, body)
		})
	}
}

func openSeed(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "mart.db"))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	return db
}

func TestSeedLoadsTwice(t *testing.T) {
	db := openSeed(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		_, err := db.ExecContext(ctx, schemas.MarketplaceSeed())
		require.NoError(t, err, "run %d", i+1)
	}
	for table, n := range map[string]int{"customers": 50, "cars": 40, "leads": 60, "appointments": 20} {
		var got, lo, hi int
		require.NoError(t, db.QueryRowContext(ctx,
			"SELECT count(*), min(id), max(id) FROM "+table).Scan(&got, &lo, &hi))
		require.Equal(t, n, got, table)
		if table != "appointments" {
			require.Equal(t, []int{1, n}, []int{lo, hi}, table+" ids")
		}
	}
	var orphans int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM cars WHERE seller_customer_id NOT IN (SELECT id FROM customers)) +
		(SELECT count(*) FROM leads WHERE customer_id NOT IN (SELECT id FROM customers)
		                              OR car_id NOT IN (SELECT id FROM cars)) +
		(SELECT count(*) FROM appointments WHERE lead_id NOT IN (SELECT id FROM leads))`).Scan(&orphans))
	require.Zero(t, orphans)
}

// TestLookupsAgainstSeed runs every lookup of every valid sample as the
// enricher would (columns by name, key as a parameter) against the seed, so
// the catalog's tables and columns match seed.sql, then maps the body.
func TestLookupsAgainstSeed(t *testing.T) {
	cfg, cat := compile(t)
	db := openSeed(t)
	ctx := context.Background()
	_, err := db.ExecContext(ctx, schemas.MarketplaceSeed())
	require.NoError(t, err)
	for _, name := range cfg.Names() {
		t.Run(name, func(t *testing.T) {
			def := cfg.Types[name]
			e := readEnvelope(t, filepath.Join("testdata", "valid", name+".json"))
			require.NoError(t, cat.Prepare(e))
			ev, err := catalog.AsJQ(e)
			require.NoError(t, err)
			lookups := map[string]any{}
			for _, l := range def.Lookups {
				key := runJQ(t, l.From, ev)
				q := fmt.Sprintf("SELECT %s FROM %s WHERE %s = ?", strings.Join(l.Columns, ", "), l.Table, l.KeyColumn)
				vals := make([]any, len(l.Columns))
				ptrs := make([]any, len(vals))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				require.NoError(t, db.QueryRowContext(ctx, q, key).Scan(ptrs...), q)
				row := map[string]any{}
				for i, c := range l.Columns {
					if n, ok := vals[i].(int64); ok {
						vals[i] = int(n) // gojq works on int, not int64
					}
					row[c] = vals[i]
				}
				lookups[l.Name] = row
			}
			body := runJQ(t, def.Body, bodyInput(t, e, lookups))
			obj, ok := body.(map[string]any)
			require.True(t, ok, "body is a %T", body)
			for k, v := range obj {
				require.NotNil(t, v, "body field %s", k)
			}
		})
	}
}
