package app

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/e2e/harness"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// A pipeline with the ledger on where one event's CRM request vanished
// from the dispatch stream and one was parked on a CRM 422: `sluice audit`
// names the lost event and exits 3; `sluice trace` shows the parked
// event's reason with the sensitive field redacted.
func TestAuditAndTraceCommands(t *testing.T) {
	cleanEnv(t)
	ctx := context.Background()
	h, err := harness.New(ctx, harness.Options{Dir: t.TempDir(),
		Topology:   topology.Config{Partitions: 4, AckWait: 2 * time.Second},
		Dispatcher: dispatcher.Config{Retry: dispatcher.RetryConfig{Tries: 3, Delay: 20 * time.Millisecond}},
		Ledger:     ledger.Config{Enabled: true}})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	pointCLI(t, h.URL(), h.Names.Config())
	t.Setenv("SLUICE_LEDGER_SENSITIVE_FIELDS", "email, phone")
	require.NoError(t, h.StartEnricher(ctx))

	const secret = "hidden.person@example.com"
	h.Sim.Reject("signup-49", 422)
	evs := []*envelope.Envelope{{ID: "signup-49", Type: "customer_signed_up", Key: "customer:49", OccurredAt: time.Now().UTC(),
		Data: json.RawMessage(`{"customer_id":49,"name":"Ravi","email":"` + secret + `","phone":"+91 98200 99999","city":"Pune"}`)}}
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 20, Keys: 4, Simple: true, Seed: 9,
		CustomerIDs: loadgen.Range{Min: 1, Max: 40}})
	require.NoError(t, err)
	evs = append(evs, p.Events...)
	res, err := loadgen.PublishJetStream(ctx, h.JS, h.Names, evs, loadgen.PublishOptions{Concurrency: 1})
	require.NoError(t, err)
	require.Equal(t, 21, res.Published)

	ds, err := h.JS.Stream(ctx, h.Names.DispatchStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := ds.Info(ctx)
		return err == nil && info.State.Msgs == 21
	}, 30*time.Second, 20*time.Millisecond)
	var lostID string
	for seq := uint64(10); lostID == "" || lostID == "signup-49"; seq++ {
		victim, err := ds.GetMsg(ctx, seq)
		require.NoError(t, err)
		lostID = ledger.EventID(victim.Data, victim.Header, h.Names.DispatchStream(), victim.Sequence)
		if lostID != "signup-49" {
			require.NoError(t, ds.DeleteMsg(ctx, seq))
		}
	}
	require.NoError(t, h.StartDispatcher(ctx))
	require.Eventually(t, func() bool {
		info, err := ds.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 30*time.Second, 20*time.Millisecond)

	out, err := runCLI(t, "audit", "--recheck", "100ms")
	require.ErrorIs(t, err, ledger.ErrFindings, out)
	require.Contains(t, out, "LOST")
	require.Contains(t, out, lostID)
	require.Contains(t, out, "FAILED")
	require.Equal(t, exitFindings, Main([]string{"audit", "--recheck", "100ms", "--publish=false"}))

	out, err = runCLI(t, "audit", "--json", "--recheck", "-1s", "--publish=false")
	require.ErrorIs(t, err, ledger.ErrFindings)
	var r ledger.Result
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.Equal(t, 1, r.Totals.Lost)
	require.Equal(t, 21, r.Totals.Accepted)
	require.GreaterOrEqual(t, r.Totals.Parked, 1)
	require.NotNil(t, r.OldestUndelivered, "the parked event is undelivered")

	// Narrowed to a key without findings, the audit passes.
	out, err = runCLI(t, "audit", "--key", "customer:49", "--recheck", "-1s")
	require.NoError(t, err, out)
	require.Contains(t, out, "OK: nothing lost")

	sum, err := ledger.LastSummary(ctx, h.JS, h.Names)
	require.NoError(t, err)
	require.NotNil(t, sum)
	require.True(t, sum.OK, "the last published summary is the keyed one")
	require.Equal(t, "customer:49", sum.Key)

	// The operator-actions listing is still there.
	out, err = runCLI(t, "audit", "actions")
	require.NoError(t, err)
	require.Contains(t, out, "no audited actions")

	require.Eventually(t, func() bool {
		out, err = runCLI(t, "trace", "signup-49")
		return err == nil && bytes.Contains([]byte(out), []byte("crm rejected: 422"))
	}, 10*time.Second, 100*time.Millisecond, "trace: %s %v", out, err)
	require.Contains(t, out, "now: parked")
	require.Contains(t, out, "CRM answer: 422")
	require.Contains(t, out, ledger.Redacted)
	require.NotContains(t, out, secret)
	require.NotContains(t, out, "99999")

	_, err = runCLI(t, "trace", "nope", "--key", "customer:49")
	require.ErrorIs(t, err, ledger.ErrEventNotFound)
}

// A reorder pair whose earlier event is still parked reads as a park the
// later event went past, not as two deliveries in the wrong order.
func TestAuditResultNamesAParkedEventThatWasOvertaken(t *testing.T) {
	now := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	r := ledger.Result{Report: ledger.Report{Keys: []ledger.KeyReport{{Key: "car:1", Reordered: []ledger.Reorder{
		{Earlier: ledger.EventRef{ID: "e1", State: ledger.StateParked}, Later: ledger.EventRef{ID: "e2", State: ledger.StateDelivered}},
		{Earlier: ledger.EventRef{ID: "e3", State: ledger.StateDelivered}, Later: ledger.EventRef{ID: "e4", State: ledger.StateDelivered}},
	}}}}}
	var out bytes.Buffer
	writeAuditResult(&out, r, now)
	require.Contains(t, out.String(), "e2     delivered while e1, accepted before it, is parked")
	require.Contains(t, out.String(), "e4     delivered before e3, accepted after it")
}
