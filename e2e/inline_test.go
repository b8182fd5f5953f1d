package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/e2e/harness"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// Issue 14: with dispatcher.inline the enricher's lane sends each request
// right after mapping it, one consumer hop per event instead of two. The
// guarantees are the same: per-key order, nothing lost (the ledger audit
// agrees), duplicates only where a process died after the CRM answered.

// inlineHarness is ledgerHarness with dispatcher.inline and step-aside on;
// only the enricher runs.
func inlineHarness(t *testing.T, sim crmsim.Config) *harness.Harness {
	t.Helper()
	cfg := stepAsideConfig()
	cfg.Inline = true
	cfg.Pause = 300 * time.Millisecond
	h := ledgerHarnessWith(t, sim, ledger.Config{}, cfg)
	require.NoError(t, h.StartEnricher(context.Background()))
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// Why: the keys held or parked, the lanes, the parked messages.
		adm, err := lane.OpenParked(context.Background(), h.JS, h.Names)
		if err == nil {
			keys, _ := adm.List(context.Background())
			for _, k := range keys {
				t.Logf("key %+v", k)
			}
		}
		if e := h.Enricher(); e != nil {
			for _, l := range e.Stats().Lanes {
				if l.LastError != "" || l.Retries > 0 {
					t.Logf("lane %+v", l)
				}
			}
		}
		logParked(t, h)
	})
	return h
}

// logTrace logs the ledger's steps of one event.
func logTrace(t *testing.T, h *harness.Harness, id string) {
	t.Helper()
	tr, err := ledger.TraceEvent(context.Background(), h.JS, h.Names, id, ledger.TraceOptions{})
	if err != nil {
		t.Logf("trace %s: %v", id, err)
		return
	}
	for _, s := range tr.Steps {
		t.Logf("trace %s: %+v", id, s)
	}
}

// A flaky CRM (10 % 503), the enricher killed twice and the NATS server
// restarted once, inline: every event reaches the CRM in order, nothing
// went through the dispatch stream, and the audit finds nothing lost or
// reordered and accounts for every duplicate the CRM saw.
func TestInlineOutletLosesNothingAcrossKillsAndRestartedNATS(t *testing.T) {
	h := inlineHarness(t, crmsim.Config{ErrorRate: 0.1, Seed: 9, Latency: 200 * time.Microsecond})
	ctx := context.Background()
	p := plan(t, 3000, 120, 9)
	done := publishAsync(t, h, p)
	for i, at := range []int{500, 1200, 2000} {
		require.Eventually(t, func() bool { return h.Sim.Delivered() >= at }, 60*time.Second, 2*time.Millisecond)
		if i == 1 {
			require.NoError(t, h.RestartNATS())
			continue
		}
		h.KillEnricher()
		require.NoError(t, h.StartEnricher(ctx))
	}
	require.Equal(t, 3000, (<-done).Published)
	rep := waitDelivered(t, h, p, 120*time.Second)
	requireInOrder(t, rep)
	requireNoKeyHeld(t, h)
	requireNothingParked(t, h) // no stale parked copy either (mesh/lane/stale.go)
	ds, err := h.JS.Stream(ctx, h.Names.DispatchStream())
	require.NoError(t, err)
	require.Zero(t, ds.CachedInfo().State.LastSeq, "inline: nothing may go through the dispatch stream")

	res, ok := auditUntilDelivered(t, h, 3000, 30*time.Second)
	require.True(t, ok)
	require.True(t, res.OK(), "audit: %s", res.Totals)
	require.Equal(t, 3000, res.Totals.Accepted)
	requireDuplicatesAccounted(t, h, rep, res)
}

// `sluice trace` of an event delivered inline points at the events stream
// (the dispatcher ran in the enricher's lane, on the event itself) and says
// inline, never at a dispatch stream that stored nothing.
func TestInlineTraceNamesTheEventsStream(t *testing.T) {
	h := inlineHarness(t, crmsim.Config{})
	p := plan(t, 40, 8, 5)
	require.Equal(t, 40, (<-publishAsync(t, h, p)).Published)
	waitDelivered(t, h, p, 30*time.Second)
	e := p.Events[len(p.Events)-1]
	var tr ledger.Trace
	require.Eventually(t, func() bool {
		var err error
		tr, err = ledger.TraceEvent(context.Background(), h.JS, h.Names, e.ID, ledger.TraceOptions{Key: e.Key})
		return err == nil && tr.State == ledger.StateDelivered
	}, 30*time.Second, 50*time.Millisecond, "trace: %+v", tr)
	var accepted, delivered *ledger.TraceStep
	for i, s := range tr.Steps {
		require.NotEqual(t, h.Names.DispatchStream(), s.Stream, "inline: no dispatch stream step: %+v", s)
		switch s.Step {
		case "accepted":
			accepted = &tr.Steps[i]
		case "delivered":
			delivered = &tr.Steps[i]
		}
	}
	require.NotNil(t, accepted, "%+v", tr.Steps)
	require.NotNil(t, delivered, "%+v", tr.Steps)
	require.Equal(t, h.Names.EventsStream(), delivered.Stream)
	require.Equal(t, accepted.Seq, delivered.Seq, "the delivery's sequence is the event's")
	require.Contains(t, delivered.Detail, "inline")
}

// Switching to inline while requests of the old mode still wait in the
// dispatch stream: the inline lanes hold their partitions until the
// dispatcher has sent them, so no key's new event overtakes its older,
// queued ones.
func TestInlineSwitchWaitsForRequestsLeftInTheDispatchStream(t *testing.T) {
	h, err := harness.New(context.Background(), harness.Options{
		Dir:            t.TempDir(),
		Topology:       topology.Config{Partitions: 4, AckWait: 2 * time.Second},
		Dispatcher:     fastRetry(),
		ExtraCustomers: 150,
		Logger:         logger(t),
		Ledger:         ledger.Config{Enabled: true},
	})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	ctx := context.Background()

	// Two hops, dispatcher not running: the requests queue up.
	require.NoError(t, h.StartEnricher(ctx))
	first, second := plan(t, 600, 40, 31), plan(t, 600, 40, 31)
	for _, e := range second.Events {
		e.ID += "-after-switch"
	}
	<-publishAsync(t, h, first)
	ds, err := h.JS.Stream(ctx, h.Names.DispatchStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := ds.Info(ctx)
		return err == nil && info.State.Msgs == 600
	}, 30*time.Second, 20*time.Millisecond, "the enricher did not queue the first events")

	// Switch: the same keys' next events must wait behind the queue.
	h.KillEnricher()
	h.SetInline(true)
	require.NoError(t, h.StartEnricher(ctx))
	<-publishAsync(t, h, second)
	require.Eventually(t, func() bool { return h.Outlet().BacklogWaits() > 0 },
		30*time.Second, 20*time.Millisecond, "the inline lanes did not wait for the dispatch stream")
	assert.Zero(t, h.Sim.Delivered(), "nothing may be sent inline while older requests wait")

	require.NoError(t, h.StartDispatcher(ctx))
	want := map[string][]string{}
	for _, e := range append(first.Events, second.Events...) {
		want[e.Key] = append(want[e.Key], e.ID)
	}
	var rep crmsim.Report
	require.Eventually(t, func() bool {
		rep = h.Sim.Check(want)
		return rep.Totals.Missing == 0
	}, 60*time.Second, 50*time.Millisecond, "not everything was delivered: %s", &rep)
	requireInOrder(t, rep)
	require.Equal(t, 1200, rep.Totals.Delivered)
	// The audit reads the same order from the ledger, across the switch:
	// two-hop records carry dispatch-stream sequences, inline ones
	// events-stream sequences.
	res, ok := auditUntilDelivered(t, h, 1200, 20*time.Second)
	require.True(t, ok)
	require.True(t, res.OK(), "%s", res.Totals)
	require.Zero(t, res.Totals.Reordered)
}

// logParked logs every parked message's headers (a failing test's why).
func logParked(t *testing.T, h *harness.Harness) {
	t.Helper()
	ctx := context.Background()
	st, err := h.JS.Stream(ctx, h.Names.ParkedStream())
	require.NoError(t, err)
	last := st.CachedInfo().State.LastSeq
	for seq := uint64(1); seq <= last; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		t.Logf("parked %d %s: %v", seq, m.Subject, m.Header)
	}
}
