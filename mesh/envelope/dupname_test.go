package envelope_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/envelope"
)

// refDuplicateName is DuplicateName as it was written first, on
// json.Decoder tokens: the scanner must give the same answer.
func refDuplicateName(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	path, dup, _ := refDupValue(dec, "")
	return path, dup
}

func refDupValue(dec *json.Decoder, at string) (string, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]struct{}{}
		for dec.More() {
			nt, err := dec.Token()
			if err != nil {
				return "", false, err
			}
			name, _ := nt.(string)
			p := name
			if at != "" {
				p = at + "." + name
			}
			if _, ok := seen[name]; ok {
				return p, true, nil
			}
			seen[name] = struct{}{}
			if p, dup, err := refDupValue(dec, p); dup || err != nil {
				return p, dup, err
			}
		}
		_, err = dec.Token()
		return "", false, err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if p, dup, err := refDupValue(dec, at+"["+strconv.Itoa(i)+"]"); dup || err != nil {
				return p, dup, err
			}
		}
		_, err = dec.Token()
		return "", false, err
	}
	return "", false, nil
}

func TestDuplicateNameCases(t *testing.T) {
	many := func(dupAt int) string {
		var b strings.Builder
		b.WriteString(`{"data":{`)
		for i := 0; i < 40; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			n := i
			if i == dupAt {
				n = 3
			}
			fmt.Fprintf(&b, `"f%d":%d`, n, i)
		}
		b.WriteString(`}}`)
		return b.String()
	}
	for _, tc := range []struct {
		in   string
		path string // "" = none
	}{
		{`{}`, ""},
		{`[]`, ""},
		{`"x"`, ""},
		{`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, ""},
		{`{"a":1,"a":2}`, "a"},
		{` { "a" : 1 , "b" : { "x" : [ 1 , { "y" : true , "y" : null } ] } } `, "b.x[1].y"},
		{`{"a":"\u0062","\u0061":2}`, ""},     // escapes in values only
		{`{"a":1,"\u0061":2}`, "a"},           // the same name once escaped
		{`{"a\"b":1,"a\u0022b":2}`, `a"b`},    // an escaped quote
		{`{"é":1,"\u00e9":2}`, "é"},           // UTF-8 and its escape
		{"{\"\xff\":1,\"\xfe\":2}", "\ufffd"}, // invalid UTF-8 decodes to U+FFFD twice
		{`{"":1,"":2}`, ""},                   // empty names (path "" but dup)
		{`{"":{"x":1,"x":2}}`, "x"},           // as the decoder spelled it
		{`[[{"a":1}],[{"b":[{"c":1,"c":1}]}]]`, "[1][0].b[0].c"},
		{`{"s":"}{\"a\":1,\"a\":2}","t":"\\"}`, ""},        // braces and quotes inside strings
		{`{"n":-1.5e+3,"m":[true,false,null],"o":{}}`, ""}, // literals
		{many(-1), ""},
		{many(20), "data.f3"}, // past the small-object slice
		{many(10), "data.f3"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.True(t, json.Valid([]byte(tc.in)))
			wantPath, wantDup := refDuplicateName([]byte(tc.in))
			path, dup := envelope.DuplicateName([]byte(tc.in))
			require.Equal(t, wantDup, dup, "as the decoder-based scan")
			require.Equal(t, wantPath, path, "as the decoder-based scan")
			if tc.path != "" {
				require.True(t, dup)
				require.Equal(t, tc.path, path)
			}
		})
	}
}

// Random documents, with and without duplicate names: the scanner and the
// decoder-based scan agree on every one.
func TestDuplicateNameMatchesDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 14))
	names := []string{"a", "b", "id", `\u0061`, "é", `\u00e9`, `q\"`, `q\u0022`, "", "x y"}
	var gen func(b *strings.Builder, depth int)
	gen = func(b *strings.Builder, depth int) {
		switch k := r.IntN(10); {
		case depth < 4 && k < 4:
			b.WriteString("{")
			n := r.IntN(6)
			if r.IntN(8) == 0 {
				n = 17 + r.IntN(5)
			}
			for i := 0; i < n; i++ {
				if i > 0 {
					b.WriteString(" ,")
				}
				name := names[r.IntN(len(names))]
				if n > 6 && r.IntN(4) > 0 {
					name = "k" + strconv.Itoa(i)
				}
				b.WriteString(`"` + name + `": `)
				gen(b, depth+1)
			}
			b.WriteString("}")
		case depth < 4 && k < 6:
			b.WriteString("[")
			n := r.IntN(4)
			for i := 0; i < n; i++ {
				if i > 0 {
					b.WriteString(",")
				}
				gen(b, depth+1)
			}
			b.WriteString(" ]")
		case k < 8:
			b.WriteString(`"s}{,\"` + names[r.IntN(len(names))] + `"`)
		default:
			b.WriteString([]string{"1", "-2.5e3", "true", "false", "null"}[r.IntN(5)])
		}
	}
	dups := 0
	for i := 0; i < 5000; i++ {
		var b strings.Builder
		b.WriteString(`{"data":`)
		gen(&b, 0)
		b.WriteString("}")
		doc := []byte(b.String())
		require.True(t, json.Valid(doc), "%s", doc)
		wantPath, wantDup := refDuplicateName(doc)
		path, dup := envelope.DuplicateName(doc)
		require.Equal(t, wantDup, dup, "%s", doc)
		require.Equal(t, wantPath, path, "%s", doc)
		if dup {
			dups++
		}
	}
	require.Greater(t, dups, 500, "the generator makes duplicates")
	require.Less(t, dups, 4500, "and documents without")
}

func BenchmarkDuplicateName(b *testing.B) {
	doc := []byte(`{"id":"r1:customer:17#3","type":"customer_updated","key":"customer:17","source":"bench",` +
		`"occurred_at":"2026-01-05T09:00:00.03Z","data":{"customer_id":17,"changes":{"name":"Asha Rao",` +
		`"email":"asha@example.com","phone":"+91 98450 00007","city":"Bengaluru"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		envelope.DuplicateName(doc)
	}
}

// The decoder-based scan it replaced, for comparison.
func BenchmarkDuplicateNameDecoder(b *testing.B) {
	doc := []byte(`{"id":"r1:customer:17#3","type":"customer_updated","key":"customer:17","source":"bench",` +
		`"occurred_at":"2026-01-05T09:00:00.03Z","data":{"customer_id":17,"changes":{"name":"Asha Rao",` +
		`"email":"asha@example.com","phone":"+91 98450 00007","city":"Bengaluru"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		refDuplicateName(doc)
	}
}

// ValidID and ValidType are loops now; they accept exactly what the
// regular expressions they replaced accepted.
func TestValidIDAndTypeMatchTheirRegexps(t *testing.T) {
	idRe := regexp.MustCompile(`^[!-~]{1,128}$`)
	typeRe := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	r := rand.New(rand.NewPCG(7, 7))
	alphabet := []byte("aZ09_-!~ \t\x7f\x00\xff\xc3\xa9.:*>/")
	cases := []string{"", "a", strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("!", 128),
		strings.Repeat("!", 129), "é", "a b", "a\n", "ab\xff"}
	for i := 0; i < 20000; i++ {
		n := r.IntN(10)
		if r.IntN(20) == 0 {
			n = 60 + r.IntN(75)
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
			if r.IntN(3) == 0 {
				b[j] = 'a'
			}
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		require.Equal(t, idRe.MatchString(c), envelope.ValidID(c), "%q", c)
		require.Equal(t, typeRe.MatchString(c), envelope.ValidType(c), "%q", c)
	}
}
