package catalog_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/itchyny/gojq"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/mesh/catalog"
)

// jqExprs covers each construct of the plain-Go subset, and its edges.
var jqExprs = []struct {
	expr string
	fast bool // within the subset (and answering for at least one input, unless defer)
	dfr  bool // within the subset, but every input here is left to gojq
}{
	{".", true, false},
	{".data.customer_id", true, false},
	{" .data.customer_id\n", true, false},
	{`.data."customer_id"`, true, false},
	{".data.missing.deeper", true, false},
	{".data.list.x", true, false}, // an array: gojq's error
	{".data.s.x", true, false},    // a string: gojq's error
	{`"customer:" + (.data.customer_id|tostring)`, true, false},
	{`"lead:" + (.data.n|tostring)`, true, false},
	{`.data.name + .data.city`, true, false},
	{`.data.name + .data.n`, true, false}, // string + number: gojq's error
	{`null + .data.n`, true, false},       // gojq turns the number into its own type
	{`.data.missing + .data.name`, true, false},
	{`.data.list + .data.list`, true, false},
	{`.data.obj + {b: 2}`, true, false},
	{`{} + .data.obj`, true, false},
	{`.data.n + 1`, true, true}, // numbers: gojq's
	{`.data.customer_id | tostring`, true, false},
	{`.data.obj | tostring`, true, false},
	{`.data.f | tostring`, true, false},
	{`.data.t | tojson`, true, false},
	{`.data | type`, true, false},
	{`.data.list | type`, true, false},
	{`.data.name // "none"`, true, false},
	{`.data.f // "was false"`, true, false},
	{`.data.missing // .data.missing // 7`, true, false},
	{`.data.name == "Asha"`, true, false},
	{`.data.name != null`, true, false},
	{`.data.n == 42`, true, false}, // numbers: gojq's
	{`.data.missing == null`, true, false},
	{`.data.t == true and .data.f == false`, true, false},
	{`.data.f or .data.missing`, true, false},
	{`.data.f or .data.t`, true, false},
	{`.data.t and .data.missing`, true, false},
	{`.data.t | not`, true, false},
	{`if .data.t then "yes" else "no" end`, true, false},
	{`if .data.f then 1 elif .data.name then 2 else 3 end`, true, false},
	{`if .data.f then 1 end`, true, false},
	{`"\(.data.name) from \(.data.city): \(.data.n) \(.data.obj) \(.data.missing)"`, true, false},
	{`{a: .data.name, "b c": .data.city, d: {e: .data.n}}`, true, false},
	{`{name: 1, name: 2}`, true, false},
	{`.data | {name, city}`, true, false},
	{`[.data.name, .data.n, [], {}]`, true, false},
	{`[]`, true, false},
	{`true, false`, false, false},
	{`.data.obj as $o | $o.a`, true, false},
	{`.data as $d | .data.obj as $d | $d`, true, false},
	{`(.data.obj // {}) as $row | .data as $c | {x: ($c.name // $row.a)} | with_entries(select(.value != null))`, true, false},
	{`.data | with_entries(select(.value != null))`, true, false},
	{`.data.obj | with_entries(select(.key == "a"))`, true, false},
	{`.data.list | with_entries(select(.value != null))`, true, true}, // gojq's
	{`.data | with_entries(.value)`, false, false},
	{`.data.list[0]`, false, false},
	{`.data.list[]`, false, false},
	{`.data.x?`, false, false},
	{`$ENV.HOME`, false, false},
	{`def f: 1; f`, false, false},
	{`.data.n + 1.5`, false, false},
	{`-(.data.n)`, false, false},
	{`.data | length`, false, false},
	{`@base64 "\(.data.name)"`, false, false},
	{`.data.obj as [$a] | $a`, false, false},
	{`.data.obj as $o | {$o}`, false, false},
	{`{(.data.name): 1}`, false, false},
	{`select(.data.t)`, false, false},
	{`reduce .data.list[] as $x (0; . + $x)`, false, false},
}

var jqInputs = []string{
	`{"data":{"customer_id":42,"name":"Asha","city":"Pune","n":42,"f":false,"t":true,"s":"str","list":[1,"x",null],"obj":{"a":1,"b":null},"missing":null}}`,
	`{"data":{"customer_id":123456789012345678901234567890,"name":"","n":1.50,"obj":{},"list":[]}}`,
	`{"data":{"customer_id":"c-1","name":null,"city":"Pune","n":-0,"obj":{"a":"x","c":[1]},"t":"yes"}}`,
	`{"data":null}`,
	`{"data":"text"}`,
	`{"data":[1,2]}`,
	`{}`,
	`null`,
	`"top"`,
}

// TestJQFastMatchesGojq runs every expression both ways over every input:
// where the plain-Go evaluator answers, gojq gives exactly that value (Go
// types included) and no error; and the subset is what the table says.
func TestJQFastMatchesGojq(t *testing.T) {
	for _, e := range jqExprs {
		q, err := catalog.CompileJQ(e.expr)
		require.NoError(t, err, e.expr)
		require.Equal(t, e.fast, q.HasFast(), "%s: within the subset", e.expr)
		answered := 0
		for _, in := range jqInputs {
			if checkFast(t, q, e.expr, decode(t, in)) {
				answered++
			}
		}
		if e.fast && !e.dfr {
			require.NotZero(t, answered, "%s: the plain-Go evaluator never answered", e.expr)
		}
	}
}

// TestSampleCatalogIsFast checks that every expression of the sample
// catalog is within the subset, so the enricher never runs gojq for them.
func TestSampleCatalogIsFast(t *testing.T) {
	for _, file := range []string{"../../schemas/marketplace/catalog.yaml"} {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		var cfg catalog.Config
		require.NoError(t, yaml.Unmarshal(b, &cfg))
		require.NotEmpty(t, cfg.Types, file)
		for name, ty := range cfg.Types {
			exprs := map[string]string{"key": ty.Key, "body": ty.Body, "crm.id_key": ty.CRM.IDKey}
			for _, l := range ty.Lookups {
				exprs["lookups."+l.Name+".from"] = l.From
			}
			for what, expr := range exprs {
				if strings.TrimSpace(expr) == "" {
					continue
				}
				q, err := catalog.CompileJQ(expr)
				require.NoError(t, err, "%s %s.%s", file, name, what)
				require.True(t, q.HasFast(), "%s %s.%s is outside the plain-Go subset: %s", file, name, what, expr)
			}
		}
	}
}

// FuzzJQFast mutates expressions and inputs: whenever the plain-Go
// evaluator answers, gojq must give the same value.
func FuzzJQFast(f *testing.F) {
	for _, e := range jqExprs {
		for _, in := range jqInputs[:3] {
			f.Add(e.expr, in)
		}
	}
	f.Fuzz(func(t *testing.T, expr, in string) {
		q, err := catalog.CompileJQ(expr)
		if err != nil || !q.HasFast() {
			return
		}
		var v any
		dec := json.NewDecoder(strings.NewReader(in))
		dec.UseNumber()
		if dec.Decode(&v) != nil {
			return
		}
		checkFast(t, q, expr, v)
	})
}

// checkFast compares the plain-Go answer with gojq's first output and
// reports whether the plain-Go evaluator answered.
func checkFast(t *testing.T, q *catalog.JQ, expr string, in any) bool {
	t.Helper()
	got, ok := q.Fast(in)
	if !ok {
		return false
	}
	it := q.Code().RunWithContext(context.Background(), in)
	want, more := it.Next()
	require.True(t, more, "%s on %v: gojq gave no output, fast gave %#v", expr, in, got)
	if err, isErr := want.(error); isErr {
		var he *gojq.HaltError
		require.False(t, errors.As(err, &he) && he.Value() == nil, "%s: gojq halted", expr)
		require.Failf(t, "gojq failed where fast answered", "%s on %v: gojq: %v, fast: %#v", expr, in, err, got)
	}
	require.Equal(t, want, got, "%s on %v", expr, in)
	return true
}

func decode(t *testing.T, in string) any {
	t.Helper()
	var v any
	dec := json.NewDecoder(strings.NewReader(in))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&v))
	return v
}

// BenchmarkJQ runs the sample customer_updated body both ways.
func BenchmarkJQ(b *testing.B) {
	const body = `(.lookups.customer // {}) as $row
      | .event.data.changes as $c
      | {
          external_id: ("customer:" + (.event.data.customer_id|tostring)),
          full_name: ($c.name // $row.name),
          email: ($c.email // $row.email),
          phone: ($c.phone // $row.phone),
          city: ($c.city // $row.city),
          updated_at: .event.occurred_at
        }
      | with_entries(select(.value != null))`
	q, err := catalog.CompileJQ(body)
	require.NoError(b, err)
	in := map[string]any{
		"event": map[string]any{"occurred_at": "2026-12-07T10:00:00Z",
			"data": map[string]any{"customer_id": json.Number("42"), "changes": map[string]any{"city": "Pune"}}},
		"lookups": map[string]any{"customer": map[string]any{"name": "Asha", "email": "a@example.com", "phone": nil, "city": "Mumbai"}},
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := q.Fast(in); !ok {
				b.Fatal("not answered")
			}
		}
	})
	b.Run("gojq", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := q.Code().Run(in).Next(); !ok {
				b.Fatal("no output")
			}
		}
	})
}
