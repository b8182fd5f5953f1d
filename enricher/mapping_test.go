package enricher

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/catalog"
)

// TestPlainPathMatchesJQ checks that the plain-path shortcut gives what jq
// gives, and declines (ok false) exactly where jq fails.
func TestPlainPathMatchesJQ(t *testing.T) {
	exprs := []struct {
		expr  string
		plain bool
	}{
		{".data.customer_id", true},
		{" .data.customer_id\n", true},
		{".data", true},
		{".data.nested.deep", true},
		{".data.missing", true},
		{".data.list.x", true},
		{".data.n.x", true},
		{".data.customer_id | tostring", false},
		{".data[0]", false},
		{".data.\"customer_id\"", false},
		{".data.customer_id?", false},
		{".", false},
		{".data..x", false},
		{".data.9x", false},
		{"$__loc__", false},
	}
	inputs := []string{
		`{"data":{"customer_id":42,"nested":{"deep":"x"},"list":[1],"n":null}}`,
		`{"data":{"customer_id":123456789012345678901234567890}}`,
		`{"data":null}`,
		`{"data":"text"}`,
		`{"data":[1,2]}`,
		`{}`,
	}
	for _, e := range exprs {
		keys := plainPath(e.expr)
		require.Equal(t, e.plain, keys != nil, e.expr)
		if keys == nil {
			continue
		}
		code, err := catalog.CompileJQ(e.expr)
		require.NoError(t, err, e.expr)
		for _, in := range inputs {
			var v any
			dec := json.NewDecoder(strings.NewReader(in))
			dec.UseNumber()
			require.NoError(t, dec.Decode(&v))
			got, ok := walk(v, keys)
			want, jqErr := first(context.Background(), code, v)
			if jqErr != nil {
				require.False(t, ok, "%s on %s: jq failed with %v, walk gave %v", e.expr, in, jqErr, got)
				continue
			}
			require.True(t, ok, "%s on %s", e.expr, in)
			require.Equal(t, want, got, "%s on %s", e.expr, in)
		}
	}
}
