package dispatcher

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/crmreq"
)

// decodeFast accepts the messages the enricher writes, and whatever it
// accepts decodes exactly as encoding/json (decodeStd) decodes it; the
// rest (escapes, nulls, other case, unknown or repeated fields, find,
// trailing data, broken JSON) is left to encoding/json.
func TestDecodeFastMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	safe := []string{"", "a", "customer:17", "contacts", "/api/contacts/{crm_id}", "POST", "PATCH", "upsert", ".id",
		"Asha Rao", "Bengaluru ü", "€uro", "ev-1#2"}
	escaped := []string{"x<y&z>", `q"uote`, "tab\there", "back\\slash"} // json.Marshal escapes them
	word := func() string {
		if r.IntN(60) == 0 {
			return pick(escaped...)
		}
		return pick(safe...)
	}
	body := func() json.RawMessage {
		switch r.IntN(8) {
		case 0:
			return nil
		case 1:
			return json.RawMessage(`"just a string"`)
		case 2:
			return json.RawMessage(`[1, 2.5e3, true, null, {"a": "b\"c"}]`)
		case 3:
			return json.RawMessage(`{ "name" : "x<y" , "nested": {"l": [ ]} }`)
		}
		m := map[string]any{"external_id": word(), "n": r.IntN(1000), "ok": r.IntN(2) == 0}
		b, _ := json.Marshal(m)
		return b
	}
	zones := []*time.Location{time.UTC, time.FixedZone("IST", 5*3600+1800), time.FixedZone("", -7*3600)}
	tm := func() time.Time {
		if r.IntN(6) == 0 {
			return time.Time{}
		}
		return time.Unix(1_700_000_000+r.Int64N(1e8), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
	}
	mutate := func(doc []byte) []byte {
		s := string(doc)
		switch r.IntN(14) {
		case 0, 1, 2, 3, 4: // as the enricher writes it
		case 5:
			var buf bytes.Buffer
			_ = json.Indent(&buf, doc, " ", "\t")
			s = buf.String() + "\n"
		case 6:
			s = strings.Replace(s, `"key"`, `"KEY"`, 1)
		case 7:
			s = strings.Replace(s, `{`, `{"extra":1,`, 1)
		case 8:
			s = strings.Replace(s, `{`, `{"type":"other",`, 1)
		case 9:
			s = strings.Replace(s, `"mode":"`+pick("upsert", "send"), `"mode":null`, 1)
			s = strings.Replace(s, `"path":`, `"path":null,"x_path":`, 1)
		case 10:
			s += pick(" ", "x", "{}", "\n\n")
		case 11:
			s = s[:r.IntN(len(s))]
		case 12:
			s = strings.Replace(s, `"method":"POST"`, `"method":7`, 1)
			s = strings.Replace(s, `"body":`, `"body":{"broken":}, "b2":`, 1)
		case 13:
			s = strings.Replace(s, "Asha", "A\xffsha", 1)
			s = strings.Replace(s, `"occurred_at":"`, `"occurred_at":"x`, 1)
		}
		return []byte(s)
	}
	accepted := 0
	for i := 0; i < 20000; i++ {
		req := crmreq.Request{EventID: word(), Type: word(), Key: word(), OccurredAt: tm(),
			AcceptedAt: tm(), Object: word(), IDKey: word(), Mode: word(), Method: word(),
			Path: word(), UpdateMethod: word(), UpdatePath: word(), IDFrom: word(),
			Body: body(), ConflictIDFrom: word()}
		if r.IntN(10) == 0 {
			req.Find = &crmreq.Find{Method: "GET", Path: "/api/contacts?email=a", IDFrom: ".id"}
		}
		doc, err := json.Marshal(req)
		require.NoError(t, err)
		doc = mutate(doc)
		fast, ok := decodeFast(doc)
		std, err := decodeStd(doc)
		if !ok {
			continue
		}
		accepted++
		require.NoError(t, err, "decodeFast accepted what encoding/json refuses: %s", doc)
		require.Equal(t, std, fast, "%s", doc)
		require.True(t, std.OccurredAt.Equal(fast.OccurredAt) && std.AcceptedAt.Equal(fast.AcceptedAt))
		require.Equal(t, string(std.Body), string(fast.Body), "the body's bytes")
	}
	require.Greater(t, accepted, 2000, "decodeFast takes the enricher's form")
}

// What the enricher writes for the sample types takes the fast path.
func TestDecodeFastTakesTheEnrichersRequests(t *testing.T) {
	for _, req := range []crmreq.Request{
		{EventID: "r1:customer:17#3", Type: "customer_updated", Key: "customer:17",
			OccurredAt: time.Date(2026, 1, 5, 9, 0, 0, 30_000_000, time.UTC), AcceptedAt: time.Now(),
			Object: "contacts", IDKey: "customer:17", Mode: "upsert", Method: "POST", Path: "/api/contacts",
			UpdateMethod: "PATCH", UpdatePath: "/api/contacts/{crm_id}",
			Body: json.RawMessage(`{"city":"Bengaluru","email":"asha@example.com","external_id":"customer:17","full_name":"Asha Rao"}`)},
		{EventID: "e-1", Type: "review", Key: "c:1", OccurredAt: time.Now(), Mode: "send", Method: "POST", Path: "/reviews",
			Body: json.RawMessage(`{"text":"très bien","by":"Zoë"}`)},
	} {
		doc, err := json.Marshal(req)
		require.NoError(t, err)
		fast, ok := decodeFast(doc)
		require.True(t, ok, "%s", doc)
		std, err := decodeStd(doc)
		require.NoError(t, err)
		require.Equal(t, std, fast)
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	doc, _ := json.Marshal(crmreq.Request{EventID: "r1:customer:17#3", Type: "customer_updated", Key: "customer:17",
		OccurredAt: time.Now(), AcceptedAt: time.Now(), Object: "contacts", IDKey: "customer:17", Mode: "upsert",
		Method: "POST", Path: "/api/contacts", UpdateMethod: "PATCH", UpdatePath: "/api/contacts/{crm_id}",
		Body: json.RawMessage(`{"city":"Bengaluru","email":"asha@example.com","external_id":"customer:17","full_name":"Asha Rao"}`)})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeRequest(doc); err != nil {
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
