package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/e2e/harness"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// ledgerHarness is newHarness with the delivery ledger on; the services
// are started by the caller.
func ledgerHarness(t *testing.T, sim crmsim.Config, lc ledger.Config) *harness.Harness {
	t.Helper()
	return ledgerHarnessWith(t, sim, lc, fastRetry())
}

// ledgerHarnessWith is ledgerHarness with the dispatcher config dc.
func ledgerHarnessWith(t *testing.T, sim crmsim.Config, lc ledger.Config, dc dispatcher.Config) *harness.Harness {
	t.Helper()
	lc.Enabled = true
	h, err := harness.New(context.Background(), harness.Options{
		Dir:            t.TempDir(),
		Topology:       topology.Config{Partitions: 16, AckWait: 2 * time.Second},
		Dispatcher:     dc,
		Sim:            sim,
		ExtraCustomers: 150,
		Logger:         logger(t),
		Ledger:         lc,
	})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

// audit runs the reconciliation `sluice audit` runs.
func audit(t *testing.T, h *harness.Harness, o ledger.AuditOptions) ledger.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := ledger.Audit(ctx, h.JS, h.Names, o)
	require.NoError(t, err)
	t.Logf("audit: %s", res.Totals)
	return res
}

// auditUntilDelivered audits until the audit counts n deliveries (the
// last ledger records may still be on their way) or within passes; ok
// false has failed the test (the caller may log what it found first).
func auditUntilDelivered(t *testing.T, h *harness.Harness, n int, within time.Duration) (ledger.Result, bool) {
	t.Helper()
	var res ledger.Result
	ok := assert.Eventually(t, func() bool {
		res = audit(t, h, ledger.AuditOptions{})
		return res.Totals.Delivered == n
	}, within, 200*time.Millisecond, "the audit does not see every delivery")
	return res, ok
}

// dispatchEmpty waits until every CRM request left the dispatch stream
// (delivered or parked, and acked).
func dispatchEmpty(t *testing.T, h *harness.Harness) {
	t.Helper()
	ok := assert.Eventually(t, func() bool {
		s, err := h.JS.Stream(context.Background(), h.Names.DispatchStream())
		return err == nil && s.CachedInfo().State.Msgs == 0
	}, 60*time.Second, 50*time.Millisecond, "dispatch stream not drained")
	if ok {
		return
	}
	// What is stuck where: the server's view of every dispatcher lane and
	// the running dispatcher's own.
	ctx := context.Background()
	if s, err := h.JS.Stream(ctx, h.Names.DispatchStream()); err == nil {
		t.Logf("dispatch stream: %+v", s.CachedInfo().State)
	}
	for p := 0; p < h.Names.Partitions(); p++ {
		c, err := h.JS.Consumer(ctx, h.Names.DispatchStream(), h.Names.ConsumerName(topology.StageDispatcher, p))
		if err != nil {
			t.Logf("lane %d: %v", p, err)
			continue
		}
		ci := c.CachedInfo()
		if ci.NumPending+uint64(ci.NumAckPending) == 0 {
			continue
		}
		t.Logf("lane %d: pending %d ack pending %d redelivered %d waiting %d paused %v groups %+v ack floor %d delivered %d",
			p, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Paused, ci.PriorityGroups,
			ci.AckFloor.Stream, ci.Delivered.Stream)
	}
	if d := h.Dispatcher(); d != nil {
		for _, l := range d.Stats().Lanes {
			if l.LastError != "" || l.Fenced > 0 || l.Restarts > 0 || l.MissedHeartbeats > 0 {
				t.Logf("dispatcher lane %+v", l)
			}
		}
	}
	t.FailNow()
}

// After a run with a flaky CRM, both services killed mid-stream and the
// NATS server restarted, the audit finds every accepted event delivered,
// none lost, none reordered, and accounts for every duplicate the CRM
// simulator saw: the ones the dispatcher saw twice exactly, the others (a
// process died between the CRM's answer and its record) among the
// possible duplicates.
//
// A delivered or parked record is stored before the message it is about
// is acked (issue 11.2), so the dispatcher is killed right after the NATS
// restart without waiting for anything: no record can be lost with it.
// (Before, the test waited for the writer's resends first; history records
// nobody waits for, such as failed attempts, are not resent and made that
// wait never end.)
func TestAuditAfterFlakyCRMAndKilledServices(t *testing.T) {
	h := ledgerHarness(t, crmsim.Config{ErrorRate: 0.1, Seed: 3, Latency: 200 * time.Microsecond}, ledger.Config{})
	ctx := context.Background()
	require.NoError(t, h.StartDispatcher(ctx))
	require.NoError(t, h.StartEnricher(ctx))
	p := plan(t, 3000, 120, 3)
	done := publishAsync(t, h, p)
	for i, at := range []int{500, 1200, 1800, 2400} {
		require.Eventually(t, func() bool { return h.Sim.Delivered() >= at }, 60*time.Second, 2*time.Millisecond)
		switch i {
		case 1:
			h.KillEnricher()
			require.NoError(t, h.StartEnricher(ctx))
		case 2:
			require.NoError(t, h.RestartNATS())
		default:
			h.KillDispatcher()
			require.NoError(t, h.StartDispatcher(ctx))
		}
	}
	require.Equal(t, 3000, (<-done).Published)
	rep := waitDelivered(t, h, p, 120*time.Second)
	requireInOrder(t, rep)
	dispatchEmpty(t, h)

	res, ok := auditUntilDelivered(t, h, 3000, 30*time.Second)
	if !ok {
		t.Logf("ledger writes %d, failed %d, retried %d, unstored %d", h.LedgerCounters.Written.Load(), h.LedgerCounters.Failed.Load(),
			h.LedgerCounters.Retried.Load(), h.LedgerCounters.Unstored.Load())
		for _, k := range res.Keys {
			for _, l := range k.Lost {
				t.Logf("lost %s seq %d at %s: %s", l.ID, l.Seq, l.AcceptedAt.Format(time.RFC3339Nano), l.Why)
			}
			for _, r := range k.Reordered {
				t.Logf("reordered %s / %s", r.Earlier.ID, r.Later.ID)
			}
		}
		t.FailNow()
	}
	require.True(t, res.OK(), "audit: %s", res.Totals)
	require.Zero(t, res.Totals.Lost)
	require.Zero(t, res.Totals.ReorderedKeys)
	require.Equal(t, 3000, res.Totals.Accepted)

	requireDuplicatesAccounted(t, h, rep, res)
}

// requireDuplicatesAccounted: every duplicate the audit is sure of, the
// CRM simulator saw (no more often), and every duplicate the simulator
// saw, the audit counts as sure or possible.
func requireDuplicatesAccounted(t *testing.T, h *harness.Harness, rep crmsim.Report, res ledger.Result) {
	t.Helper()
	simDups := map[string]int{}
	for _, k := range rep.Keys {
		for id, n := range k.Duplicates {
			simDups[id] = n
		}
	}
	certain, possible := map[string]int{}, map[string]bool{}
	for _, k := range res.Keys {
		for _, d := range k.Duplicates {
			certain[d.ID] = d.Deliveries
		}
		for _, id := range k.PossibleDuplicates {
			possible[id] = true
		}
	}
	t.Logf("duplicates: simulator %d ids (%d extra); audit %d certain (+%d deliveries), %d possible; ledger writes %d, failed %d, unstored %d",
		rep.Totals.DuplicateIDs, rep.Totals.ExtraDeliveries, res.Totals.Duplicates, res.Totals.ExtraDeliveries,
		res.Totals.PossibleDuplicates, h.LedgerCounters.Written.Load(), h.LedgerCounters.Failed.Load(), h.LedgerCounters.Unstored.Load())
	for id, n := range certain {
		require.Contains(t, simDups, id, "the audit counts a duplicate the CRM did not see")
		require.LessOrEqual(t, n, simDups[id], "more deliveries recorded than the CRM saw for %s", id)
	}
	for id := range simDups {
		if _, ok := certain[id]; !ok && !possible[id] {
			logTrace(t, h, id)
			t.Fatalf("the CRM saw %s twice but the audit does not count it even as possible", id)
		}
	}
}

// An event whose CRM request disappears from the dispatch stream (deleted
// before the dispatcher ran) is named lost by the audit, which fails.
func TestAuditNamesAnEventDeletedFromTheDispatchStream(t *testing.T) {
	h := ledgerHarness(t, crmsim.Config{}, ledger.Config{})
	ctx := context.Background()
	require.NoError(t, h.StartEnricher(ctx))
	// Upserts only: no later event depends on the lost one's CRM id.
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 60, Keys: 6, Simple: true, Seed: 4})
	require.NoError(t, err)
	require.Equal(t, 60, (<-publishAsync(t, h, p)).Published)
	ds, err := h.JS.Stream(ctx, h.Names.DispatchStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := ds.Info(ctx)
		return err == nil && info.State.Msgs == 60
	}, 30*time.Second, 20*time.Millisecond)
	victim, err := ds.GetMsg(ctx, 30)
	require.NoError(t, err)
	lostID := ledger.EventID(victim.Data, victim.Header, h.Names.DispatchStream(), victim.Sequence)
	require.NoError(t, ds.DeleteMsg(ctx, 30))

	require.NoError(t, h.StartDispatcher(ctx))
	require.Eventually(t, func() bool { return h.Sim.Delivered() >= 59 }, 60*time.Second, 20*time.Millisecond,
		"delivered %d", h.Sim.Delivered())
	dispatchEmpty(t, h)

	res := audit(t, h, ledger.AuditOptions{Recheck: 200 * time.Millisecond})
	require.False(t, res.OK())
	require.Equal(t, 1, res.Totals.Lost)
	require.Equal(t, 59, res.Totals.Delivered)
	require.Zero(t, res.Totals.ReorderedKeys)
	var lost []ledger.EventRef
	for _, k := range res.Keys {
		lost = append(lost, k.Lost...)
	}
	require.Len(t, lost, 1)
	require.Equal(t, lostID, lost[0].ID)
	require.Contains(t, lost[0].Why, "acked by the enricher")
	require.Contains(t, lost[0].Why, "not in the dispatch stream")

	// The same audit narrowed to the lost event's key finds it too.
	keyed := audit(t, h, ledger.AuditOptions{Key: lost[0].Key, Recheck: -1})
	require.Equal(t, 1, keyed.Totals.Lost)
	require.Less(t, keyed.Totals.Accepted, 60)
}

// A CRM 422 parks an event at the dispatcher: trace shows the reason and
// the CRM's answer, and redacts the fields marked sensitive (here email)
// in the payload and the CRM request body.
func TestTraceShowsAParkedEventsReasonRedacted(t *testing.T) {
	h := ledgerHarness(t, crmsim.Config{}, ledger.Config{SensitiveFields: []string{"email"}, Bodies: true})
	ctx := context.Background()
	require.NoError(t, h.StartDispatcher(ctx))
	require.NoError(t, h.StartEnricher(ctx))
	const secret = "very.private@example.com"
	ev := func(id string, data string) *envelope.Envelope {
		return &envelope.Envelope{ID: id, Type: "customer_signed_up", Key: "customer:7",
			OccurredAt: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC), Data: json.RawMessage(data)}
	}
	h.Sim.Reject("trace-1", 422)
	evs := []*envelope.Envelope{
		ev("trace-1", `{"customer_id":7,"name":"Asha","email":"`+secret+`","phone":"+91 98200 12345","city":"Pune"}`),
		ev("trace-2", `{"customer_id":7,"name":"Asha","email":"`+secret+`","phone":"+91 98200 12345","city":"Mumbai"}`),
	}
	res, err := loadgen.PublishJetStream(ctx, h.JS, h.Names, evs, loadgen.PublishOptions{Concurrency: 1})
	require.NoError(t, err)
	require.Equal(t, 2, res.Published)
	parked, err := h.JS.Stream(ctx, h.Names.ParkedStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := parked.Info(ctx)
		return err == nil && info.State.Msgs == 2
	}, 30*time.Second, 20*time.Millisecond, "both events parked (the second behind the first)")

	var tr ledger.Trace
	require.Eventually(t, func() bool {
		tr, err = ledger.TraceEvent(ctx, h.JS, h.Names, "trace-1", ledger.TraceOptions{SensitiveFields: []string{"email"}})
		require.NoError(t, err)
		return hasStep(tr, "parked")
	}, 10*time.Second, 100*time.Millisecond, "the parked record is written after the park")
	require.Equal(t, ledger.StateParked, tr.State)
	require.Equal(t, "customer:7", tr.Key)
	require.True(t, hasStep(tr, "accepted"))
	require.True(t, hasStep(tr, "enriched"))
	require.False(t, hasStep(tr, "delivered"))
	var reason string
	for _, s := range tr.Steps {
		if s.Step == "parked" {
			reason = s.Detail
		}
	}
	require.Contains(t, reason, "crm rejected: 422")
	require.NotNil(t, tr.Response)
	require.Equal(t, 422, tr.Response.Status)
	require.NotNil(t, tr.Request)
	require.Equal(t, "/api/contacts", tr.Request.Path)
	whole, err := json.Marshal(tr)
	require.NoError(t, err)
	require.NotContains(t, string(whole), secret, "a sensitive field leaked into the trace")
	require.Contains(t, string(tr.Payload), ledger.Redacted)
	require.Contains(t, string(tr.Request.Body), ledger.Redacted)

	// Found without the key too (through the ledger's headers); the event
	// parked behind it says so.
	tr2, err := ledger.TraceEvent(ctx, h.JS, h.Names, "trace-2", ledger.TraceOptions{})
	require.NoError(t, err)
	require.Equal(t, ledger.StateParked, tr2.State)
	require.True(t, strings.Contains(stepDetail(tr2, "parked"), "behind parked event"), "%+v", tr2.Steps)

	_, err = ledger.TraceEvent(ctx, h.JS, h.Names, "no-such-event", ledger.TraceOptions{})
	require.ErrorIs(t, err, ledger.ErrEventNotFound)
}

func hasStep(tr ledger.Trace, step string) bool { return stepDetail(tr, step) != "\x00" }

func stepDetail(tr ledger.Trace, step string) string {
	for _, s := range tr.Steps {
		if s.Step == step {
			return s.Detail
		}
	}
	return "\x00"
}

// A key parked at the dispatcher (CRM 422) with its later events parked
// behind it, then replayed by an operator once the CRM takes it: the audit
// finds everything delivered in accepted order, and trace shows the park
// and the replayed delivery.
func TestAuditAfterParkAndReplayFindsOrderKept(t *testing.T) {
	h := ledgerHarness(t, crmsim.Config{}, ledger.Config{})
	ctx := context.Background()
	require.NoError(t, h.StartDispatcher(ctx))
	require.NoError(t, h.StartEnricher(ctx))
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 12, Keys: 2, Simple: true, Seed: 5})
	require.NoError(t, err)
	want := p.Expected()
	var key string
	for k := range want {
		if key == "" || k < key {
			key = k
		}
	}
	ids := want[key]
	require.GreaterOrEqual(t, len(ids), 3)
	h.Sim.Reject(ids[1], 422)
	require.Equal(t, 12, (<-publishAsync(t, h, p)).Published)
	parked, err := h.JS.Stream(ctx, h.Names.ParkedStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := parked.Info(ctx)
		return err == nil && info.State.Msgs == uint64(len(ids)-1) && h.Sim.Delivered() == 12-len(ids)+1
	}, 30*time.Second, 20*time.Millisecond, "the rejected event and the ones behind it are parked")

	res := audit(t, h, ledger.AuditOptions{Recheck: -1})
	require.True(t, res.OK())
	require.Equal(t, len(ids)-1, res.Totals.Parked)
	require.NotNil(t, res.OldestUndelivered)
	require.Equal(t, ids[1], res.OldestUndelivered.ID)

	h.Sim.Reject(ids[1], 0)
	admin, err := lane.OpenParked(ctx, h.JS, h.Names)
	require.NoError(t, err)
	rr, err := admin.Replay(ctx, topology.StageDispatcher, key, 20*time.Second, 5)
	require.NoError(t, err)
	require.True(t, rr.Unblocked)
	rep := waitDelivered(t, h, p, 30*time.Second)
	requireInOrder(t, rep)
	dispatchEmpty(t, h)

	res, ok := auditUntilDelivered(t, h, 12, 20*time.Second)
	require.True(t, ok)
	require.True(t, res.OK(), "%s", res.Totals)
	require.Zero(t, res.Totals.Reordered)
	require.Zero(t, res.Totals.Parked)
	require.Zero(t, res.Totals.Duplicates, "a 422 is not a delivery: the replay is the first")

	tr, err := ledger.TraceEvent(ctx, h.JS, h.Names, ids[1], ledger.TraceOptions{Key: key})
	require.NoError(t, err)
	require.Equal(t, ledger.StateDelivered, tr.State)
	require.Contains(t, stepDetail(tr, "parked"), "crm rejected: 422")
	require.Contains(t, stepDetail(tr, "delivered"), "replay")
	require.Equal(t, "CRM request stored in the dispatch stream", stepDetail(tr, "enriched"),
		"without ledger.enriched the dispatcher's records say when the request was stored")
	require.Contains(t, stepDetail(tr, "replayed"), "by replay")
}
