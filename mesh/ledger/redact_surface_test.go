package ledger_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// TestRecordsAndTraceRedact: the ledger records (stored bodies, park
// reasons and errors) and `sluice trace` (payload, request body, step
// details) hide user_password, pwd, passcode, db_pass and an e-mail listed
// in sensitive_fields, wherever they are.
func TestRecordsAndTraceRedact(t *testing.T) {
	ctx := context.Background()
	nc, js, names := setup(t)
	require.NoError(t, ledger.Ensure(ctx, js, names, ledger.DefaultConfig()))
	const secret, email = "hunter2-PLAIN", "priya@example.in"
	data := `{"user_password":"` + secret + `","pwd":"` + secret + `","passcode":"` + secret +
		`","db_pass":"` + secret + `","email":"` + email + `","city":"Pune"}`
	m := nats.NewMsg(names.EventSubject("order", "customer:7"))
	m.Header.Set(nats.MsgIdHdr, "e-1")
	m.Data = []byte(`{"id":"e-1","type":"order","key":"customer:7","occurred_at":"2026-01-01T00:00:00Z","data":` + data + `}`)
	ack, err := js.PublishMsg(ctx, m)
	require.NoError(t, err)

	w, err := ledger.NewWriter(nc, names, ledger.WriterConfig{SensitiveFields: []string{"email"}, Bodies: true, Enriched: true})
	require.NoError(t, err)
	tok := topology.KeyToken("customer:7")
	w.Write(ledger.Record{Step: ledger.StepEnriched, EventID: "e-1", Type: "order", KeyToken: tok,
		Stage: topology.StageEnricher, Seq: ack.Sequence, At: time.Now(), Body: json.RawMessage(data)})
	w.Write(ledger.Record{Step: ledger.StepParked, EventID: "e-1", Type: "order", KeyToken: tok,
		Stage: topology.StageDispatcher, Seq: 1, At: time.Now(),
		Reason: `crm rejected: 422 {"email":"` + email + `","user_password":"` + secret + `"}`,
		Error:  "db_pass=" + secret + " pwd: " + secret})
	require.NoError(t, w.Flush(ctx))

	recs, _, err := (&ledger.Source{JS: js, Names: names}).Records(ctx, ledger.Filter{Key: "customer:7"}, time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	stored, err := json.Marshal(recs)
	require.NoError(t, err)
	requireNoLeak(t, string(stored), secret, email)
	require.Contains(t, string(stored), `\"user_password\":\"[redacted]\"`)

	tr, err := ledger.TraceEvent(ctx, js, names, "e-1", ledger.TraceOptions{Key: "customer:7", SensitiveFields: []string{"email"}})
	require.NoError(t, err)
	out, err := json.Marshal(tr)
	require.NoError(t, err)
	requireNoLeak(t, string(out), secret, email)
	require.Contains(t, string(tr.Payload), `"city":"Pune"`)
	require.Contains(t, string(out), "crm rejected: 422")
}

func requireNoLeak(t *testing.T, out string, leaks ...string) {
	t.Helper()
	for _, l := range leaks {
		require.NotContains(t, out, l, "leaked into:\n%s", out)
	}
}
