package productdb_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/itchyny/gojq"
)

func mustParse(tb testing.TB, src string) *gojq.Query {
	q, err := gojq.Parse(src)
	if err != nil {
		tb.Fatal(err)
	}
	return q
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// toGoJQ re-decodes v the way catalog.AsJQ decodes event data (numbers as
// float64), which is what a lookup's jq "from" expression usually yields.
func toGoJQ(v any) any {
	b, _ := json.Marshal(v)
	var w any
	_ = json.Unmarshal(b, &w)
	return w
}
