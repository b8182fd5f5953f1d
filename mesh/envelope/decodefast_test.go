package envelope

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// decodeFast accepts the plain envelopes producers send, and whatever it
// accepts decodes exactly as encoding/json (decodeStd) decodes it; the
// rest (escapes, nulls, other case, unknown or repeated fields, trailing
// data, broken JSON) is left to encoding/json.
func TestDecodeFastMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 3))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	safe := []string{"", "e-1", "customer_updated", "customer:17", "bench", "Zoë’s app", "r1:customer:17#3"}
	escaped := []string{"x<y&z>", `q"uote`, "tab\there"}
	word := func() string {
		if r.IntN(40) == 0 {
			return pick(escaped...)
		}
		return pick(safe...)
	}
	data := func() json.RawMessage {
		switch r.IntN(6) {
		case 0:
			return nil
		case 1:
			return json.RawMessage(`[1, {"a": "b\"c"}]`)
		case 2:
			return json.RawMessage(`{ "customer_id" : 17 , "changes": {"name": "Asha", "tags": [ ]} }`)
		case 3:
			return json.RawMessage(`"text"`)
		}
		b, _ := json.Marshal(map[string]any{"customer_id": r.IntN(2000), "changes": map[string]any{"city": word()}})
		return b
	}
	zones := []*time.Location{time.UTC, time.FixedZone("IST", 5*3600+1800)}
	accepted := 0
	for i := 0; i < 20000; i++ {
		e := Envelope{ID: word(), Type: word(), Key: word(), Source: word(), Data: data()}
		if r.IntN(8) > 0 {
			e.OccurredAt = time.Unix(1_700_000_000+r.Int64N(1e8), r.Int64N(1e9)).In(zones[r.IntN(2)])
		}
		doc, err := json.Marshal(e)
		require.NoError(t, err)
		s := string(doc)
		switch r.IntN(14) {
		case 0, 1, 2, 3, 4:
		case 5:
			var buf bytes.Buffer
			_ = json.Indent(&buf, doc, "", "  ")
			s = "\n " + buf.String() + "\r\n"
		case 6:
			s = strings.Replace(s, `"type"`, `"Type"`, 1)
		case 7:
			s = strings.Replace(s, `{`, `{"extra":1,`, 1)
		case 8:
			s = strings.Replace(s, `{`, `{"id":"first",`, 1)
		case 9:
			s = strings.Replace(s, `"source":"`, `"source":null,"x":"`, 1)
			s = strings.Replace(s, `"data":`, `"data":null,"y":`, 1)
		case 10:
			s += pick(" ", "x", "{}")
			if r.IntN(3) == 0 {
				s = "[" + s + "]"
			}
		case 11:
			s = s[:r.IntN(len(s))]
		case 12:
			s = strings.Replace(s, `"id":"`, `"id":5,"z":"`, 1)
			s = strings.Replace(s, `"occurred_at":"`, `"occurred_at":"yesterday`, 1)
		case 13:
			s = strings.Replace(s, "Zoë", "Zo\xff", 1)
		}
		doc = []byte(s)
		fast, ok := decodeFast(doc)
		std, err := decodeStd(doc)
		if !ok {
			continue
		}
		accepted++
		require.NoError(t, err, "decodeFast accepted what encoding/json refuses: %s", doc)
		require.Equal(t, std, fast, "%s", doc)
		require.Equal(t, string(std.Data), string(fast.Data), "the data's bytes")
	}
	require.Greater(t, accepted, 4000, "decodeFast takes the plain form")
}

func BenchmarkDecode(b *testing.B) {
	doc := []byte(`{"id":"r1:customer:17#3","type":"customer_updated","key":"customer:17","source":"bench",` +
		`"occurred_at":"2026-01-05T09:00:00.03Z","data":{"customer_id":17,"changes":{"name":"Asha Rao",` +
		`"email":"asha@example.com","phone":"+91 98450 00007","city":"Bengaluru"}}}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeStd(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
