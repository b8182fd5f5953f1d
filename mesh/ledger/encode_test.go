package ledger

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// appendJSON writes what encoding/json writes, byte for byte.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	for _, r := range []Record{
		{},
		{Step: StepDelivered, EventID: "customer:42#7", Stage: topology.StageDispatcher, At: at, Seq: 99, Deliveries: 2, Attempts: 1,
			AcceptedAt: at.Add(-time.Second), EnrichedAt: at.Add(-time.Millisecond), Inline: true, Replay: "r1", CRM: &CRMCall{Method: "PATCH", Path: "/api/leads/x", Status: 200,
				Took: 1500, Latency: 2 * time.Second, CRMID: "leads-1", Note: "n"}},
		{Step: StepEnriched, EventID: `odd "id" <&> ü`, Stage: topology.StageEnricher, At: at.In(time.FixedZone("x", 3600)),
			Out: "sluice.dispatch.1.t.k", Body: json.RawMessage(` {"a": [1, 2], "e":"<b>"} `)},
		{Step: StepParked, EventID: "e\x01\n", Reason: "crm rejected: 422", Error: "bad \xff utf8", CRM: &CRMCall{Status: 422}},
		{Step: StepParked, CRM: &CRMCall{}},
		{Step: StepAttempt, EventID: "deal:1#1", CRM: &CRMCall{Method: "POST", Status: 503, Kind: "create", Error: "timeout",
			Response: `{"error":"<busy>"}`, Headers: map[string]string{"X-Error": "quota ü", "A": "1"}, Uncertain: true}},
	} {
		want, err := json.Marshal(&r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(r.appendJSON(nil)))
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("customer:1#1", "crm rejected: 422", "/api/x", int64(5), []byte(`{"a":1}`))
	f.Fuzz(func(t *testing.T, id, reason, path string, n int64, body []byte) {
		r := Record{Step: StepDelivered, EventID: id, Reason: reason, Seq: uint64(n), At: time.Unix(n%1e10, n%1e9).UTC(),
			CRM: &CRMCall{Path: path, Took: time.Duration(n)}}
		if json.Valid(body) {
			r.Body = body
		}
		want, err := json.Marshal(&r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(r.appendJSON(nil)))
	})
}
