package enricher

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/crmreq"
)

// encodeRequest writes what json.Marshal writes, byte for byte, for
// random requests with and without what encoding/json escapes, and takes
// its own path for the plain ones.
func TestEncodeRequestMatchesJSONMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 4))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	plain := []string{"", "e-1", "customer:17", "contacts", "/api/contacts/{crm_id}", "POST", "upsert", ".id", "Zoë", "€"}
	odd := []string{"x<y", "a&b", "c>d", `q"`, `back\slash`, "tab\t", "bad\xffutf8", "line\u2028sep", "para\u2029sep", "\x00"}
	word := func() string {
		if r.IntN(30) == 0 {
			return pick(odd...)
		}
		return pick(plain...)
	}
	bodies := []string{``, `{}`, `null`, `{"a":1}`, `{"full_name":"Zoë","city":"Bengaluru","n":[1,2.5,true,null]}`,
		`{"a": 1}`, "{\"a\":\n1}", `{"html":"<b>"}`, `{"amp":"a&b"}`, `{"s":"x\u2028y"}`, "{\"s\":\"x\u2028y\"}",
		`{"esc":"q\"uote \\ \u00e9"}`, `[1,"two",{"three":3}]`, `"str"`, `{"broken":}`, `{"a":1}x`, `{"sp":"in string ok"}`}
	zones := []*time.Location{time.UTC, time.FixedZone("IST", 5*3600+1800), time.FixedZone("odd", 3600+17)}
	tm := func() time.Time {
		switch r.IntN(12) {
		case 0:
			return time.Time{}
		case 1:
			return time.Date(10000+r.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC) // MarshalJSON refuses
		}
		return time.Unix(1_700_000_000+r.Int64N(1e8), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
	}
	own := 0
	for i := 0; i < 20000; i++ {
		req := crmreq.Request{EventID: word(), Type: word(), Key: word(), OccurredAt: tm(), AcceptedAt: tm(),
			Object: word(), IDKey: word(), Mode: word(), Method: word(), Path: word(), UpdateMethod: word(),
			UpdatePath: word(), IDFrom: word(), ConflictIDFrom: word()}
		if bd := pick(bodies...); bd != "" {
			req.Body = json.RawMessage(bd)
		}
		if r.IntN(20) == 0 {
			req.Find = &crmreq.Find{Method: "GET", Path: "/x", IDFrom: ".id"}
		}
		want, wantErr := json.Marshal(&req)
		got, err := encodeRequest(&req)
		if wantErr != nil {
			require.Error(t, err, "json.Marshal refuses %#v", req)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		if _, ok := appendRequest(nil, &req); ok {
			own++
		}
	}
	require.Greater(t, own, 5000, "the plain requests take encodeRequest's own path")
}

// The request of a sample event takes the fast path.
func TestEncodeRequestTakesTheSampleRequest(t *testing.T) {
	req := crmreq.Request{EventID: "r1:customer:17#3", Type: "customer_updated", Key: "customer:17",
		OccurredAt: time.Date(2026, 1, 5, 9, 0, 0, 30_000_000, time.UTC), AcceptedAt: time.Now(),
		Object: "contacts", IDKey: "customer:17", Mode: "upsert", Method: "POST", Path: "/api/contacts",
		UpdateMethod: "PATCH", UpdatePath: "/api/contacts/{crm_id}",
		Body: json.RawMessage(`{"city":"Bengaluru","email":"asha@example.com","external_id":"customer:17","full_name":"Asha Rao"}`)}
	got, ok := appendRequest(nil, &req)
	require.True(t, ok)
	want, err := json.Marshal(&req)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
}

func BenchmarkEncodeRequest(b *testing.B) {
	req := crmreq.Request{EventID: "r1:customer:17#3", Type: "customer_updated", Key: "customer:17",
		OccurredAt: time.Now(), AcceptedAt: time.Now(), Object: "contacts", IDKey: "customer:17", Mode: "upsert",
		Method: "POST", Path: "/api/contacts", UpdateMethod: "PATCH", UpdatePath: "/api/contacts/{crm_id}",
		Body: json.RawMessage(`{"city":"Bengaluru","email":"asha@example.com","external_id":"customer:17","full_name":"Asha Rao"}`)}
	b.Run("own", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = encodeRequest(&req)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(&req)
		}
	})
}
