package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/e2e/harness"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// Issue 14: a key whose request fails transiently steps aside (its later
// events wait behind it, in order) while its partition's other keys flow;
// a CRM that is really down still pauses the outlet, alerts, and a probe
// ends the pause as soon as the CRM answers again.

// stepAsideConfig is the dispatcher's step-aside with test-sized delays.
// The pause is long (60 s) so that only a probe can end it within a test.
func stepAsideConfig() dispatcher.Config {
	return dispatcher.Config{
		Retry: dispatcher.RetryConfig{Tries: 3, Delay: 20 * time.Millisecond},
		Pause: 60 * time.Second,
		StepAside: dispatcher.StepAsideConfig{Enabled: true,
			Backoff:    []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second},
			ProbeEvery: 500 * time.Millisecond},
	}
}

func newStepAsideHarness(t *testing.T, partitions int, sim crmsim.Config) *harness.Harness {
	t.Helper()
	return newOutletHarness(t, partitions, sim, false)
}

// newOutletHarness is newStepAsideHarness with dispatcher.inline on or
// off. Inline, the dispatcher is not started: whatever reaches the CRM
// was sent by the enricher's lanes.
func newOutletHarness(t *testing.T, partitions int, sim crmsim.Config, inline bool) *harness.Harness {
	t.Helper()
	ctx := context.Background()
	cfg := stepAsideConfig()
	cfg.Inline = inline
	h, err := harness.New(ctx, harness.Options{
		Dir:            t.TempDir(),
		Topology:       topology.Config{Partitions: partitions, AckWait: 3 * time.Second},
		Dispatcher:     cfg,
		Sim:            sim,
		ExtraCustomers: 150,
		Logger:         logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	if !inline {
		require.NoError(t, h.StartDispatcher(ctx))
	}
	require.NoError(t, h.StartEnricher(ctx))
	return h
}

// outlets are the two ways a request reaches the CRM: through the
// dispatch stream and the dispatcher's lanes, or (dispatcher.inline) from
// the enricher's lane that mapped it.
var outlets = []struct {
	name   string
	inline bool
	stage  topology.Stage // whose lanes send, pause and hold
}{
	{"dispatcher lanes", false, topology.StageDispatcher},
	{"inline", true, topology.StageEnricher},
}

// outletLanes are the lane stats of the lanes that send to the CRM.
func outletLanes(h *harness.Harness, inline bool) []lane.Stats {
	if inline {
		return h.Enricher().Stats().Lanes
	}
	return h.Dispatcher().Stats().Lanes
}

// TestTransientFailureStepsAsideWhileOthersFlow: one partition, so every
// key shares the lane. The first event of one key fails (503) until the
// test lifts it: every other key's events are delivered meanwhile, none of
// the failing key's later events are, and once the CRM takes the event
// the key's events arrive, all in order.
func TestTransientFailureStepsAsideWhileOthersFlow(t *testing.T) {
	for _, o := range outlets {
		t.Run(o.name, func(t *testing.T) { testTransientFailureStepsAside(t, o.inline) })
	}
}

func testTransientFailureStepsAside(t *testing.T, inline bool) {
	h := newOutletHarness(t, 1, crmsim.Config{}, inline)
	p := plan(t, 600, 30, 14)
	victim := p.Events[0]
	want := p.Expected()
	require.Greater(t, len(want[victim.Key]), 1, "the failing key needs later events")
	h.Sim.Reject(victim.ID, http.StatusServiceUnavailable)
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range h.Sim.Records() {
				if r.Key == victim.Key {
					t.Logf("DEBUG %s %d %s", r.EventID, r.Status, r.At.Format("05.000"))
				}
			}
		}
	})
	<-publishAsync(t, h, p)

	// Everything but the failing key arrives while its first event fails.
	var rep crmsim.Report
	require.Eventually(t, func() bool {
		rep = h.Sim.Check(want)
		return rep.Totals.Missing == len(want[victim.Key]) && len(rep.Keys) == 1 && rep.Keys[0].Key == victim.Key
	}, 60*time.Second, 100*time.Millisecond, "the partition's other keys were not delivered while one key failed: %+v %d %+v", &rep.Totals, len(want[victim.Key]), &rep.Keys)
	require.Positive(t, heldCount(t, h), "the failing key should have stepped aside")
	for _, r := range h.Sim.Records() {
		if r.Key == victim.Key {
			require.Equal(t, victim.ID, r.EventID, "a later event of the failing key reached the CRM before it")
		}
	}

	h.Sim.Reject(victim.ID, 0)
	rep = waitDelivered(t, h, p, 60*time.Second)
	if !rep.OK() {
		for _, r := range h.Sim.Records() {
			if r.Key == victim.Key {
				t.Logf("DEBUG %s %d %s", r.EventID, r.Status, r.At.Format("05.000"))
			}
		}
	}
	requireInOrder(t, rep)
	requireNoKeyHeld(t, h)
	requireNothingParked(t, h)
}

// TestCRMDownPausesOutletAlertsAndProbeResumes: with the CRM down for
// 20 s, every partition's circuit opens after a few failures in a row:
// the outlet pauses (an alert per lane) within the seed's bound (3 tries
// within 6 s), the rest waits in order, and when the CRM is back a probe
// resumes each lane long before its 60 s pause would have ended.
func TestCRMDownPausesOutletAlertsAndProbeResumes(t *testing.T) {
	for _, o := range outlets {
		t.Run(o.name, func(t *testing.T) { testCRMDownPausesOutlet(t, o.inline, o.stage) })
	}
}

func testCRMDownPausesOutlet(t *testing.T, inline bool, stage topology.Stage) {
	const partitions = 4
	h := newOutletHarness(t, partitions, crmsim.Config{}, inline)
	ctx := context.Background()
	alerts := alertConsumer(t, h)

	down := time.Now()
	h.Sim.Outage(20 * time.Second)
	p := plan(t, 2000, 120, 22)
	<-publishAsync(t, h, p)

	// Every lane pauses, and says so, within 6 s of its first failure.
	paused := map[int]time.Time{}
	deadline := time.Now().Add(30 * time.Second)
	for len(paused) < partitions && time.Now().Before(deadline) {
		msgs, err := alerts.Fetch(10, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range msgs.Messages() {
			var a lane.Alert
			require.NoError(t, json.Unmarshal(m.Data(), &a))
			if a.Kind == "lane_paused" && a.Stage == stage {
				if _, ok := paused[a.Partition]; !ok {
					paused[a.Partition] = a.At
				}
			}
			_ = m.Ack()
		}
	}
	require.Len(t, paused, partitions, "every %s lane should pause (and alert) while the CRM is down", stage)
	for pt, at := range paused {
		require.Less(t, at.Sub(down), 6*time.Second, "partition %d paused %s after the CRM went down", pt, at.Sub(down))
	}

	// Back after 20 s; the lanes are paused for 60 s: only probes can
	// resume them in time.
	rep := waitDelivered(t, h, p, 20*time.Second+15*time.Second)
	for _, k := range rep.Keys {
		if k.Reordered != nil { // what the CRM got for the first reordered key, before the failure
			for _, r := range h.Sim.Records() {
				if r.Key == k.Key {
					t.Logf("reordered key %s: %s answered %d at %s", k.Key, r.EventID, r.Status, r.At.Format("05.000"))
				}
			}
			break
		}
	}
	requireInOrder(t, rep)
	var resumes uint64
	for _, st := range outletLanes(h, inline) {
		resumes += st.ProbeResumes
	}
	require.Positive(t, resumes, "probes should have resumed the lanes")
	// A probe answered 2xx was applied by the CRM (this one, like most,
	// does not deduplicate): the lane must use that answer, not send the
	// request a second time (a second record, a second note).
	require.Zero(t, rep.Totals.ExtraDeliveries, "requests applied twice: %s", rep.String())
	requireNoKeyHeld(t, h)
	_ = ctx
}

// TestStepAsideAndCircuitKeepOrderAcrossAKill: a flaky CRM (5 % 503), an
// outage that opens the circuits, and the dispatcher killed once while
// keys are held: every event arrives, in order per key, and no key stays
// held.
func TestStepAsideAndCircuitKeepOrderAcrossAKill(t *testing.T) {
	h := newStepAsideHarness(t, 4, crmsim.Config{ErrorRate: 0.05, Seed: 7})
	ctx := context.Background()
	p := plan(t, 4000, 150, 23)
	done := publishAsync(t, h, p)

	require.Eventually(t, func() bool { return h.Sim.Delivered() >= 1000 }, 60*time.Second, 10*time.Millisecond)
	h.Sim.Outage(3 * time.Second)
	require.Eventually(t, func() bool { return h.Sim.Delivered() >= 2000 }, 60*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return heldCount(t, h) > 0 }, 30*time.Second, 5*time.Millisecond,
		"no key held to kill the dispatcher with")
	h.KillDispatcher()
	t.Logf("dispatcher killed at %d delivered, %d keys held", h.Sim.Delivered(), heldCount(t, h))
	require.NoError(t, h.StartDispatcher(ctx))
	<-done

	rep := waitDelivered(t, h, p, 120*time.Second)
	requireInOrder(t, rep)
	requireNoKeyHeld(t, h)
	requireNothingParked(t, h)
}

// heldCount is the number of keys the dispatcher holds (or replays) for a
// retry now.
func heldCount(t *testing.T, h *harness.Harness) int {
	t.Helper()
	adm, err := lane.OpenParked(context.Background(), h.JS, h.Names)
	require.NoError(t, err)
	keys, err := adm.List(context.Background())
	require.NoError(t, err)
	n := 0
	for _, k := range keys {
		if k.Held {
			n++
		}
	}
	return n
}

// requireNoKeyHeld waits until no key is held or parked.
func requireNoKeyHeld(t *testing.T, h *harness.Harness) {
	t.Helper()
	adm, err := lane.OpenParked(context.Background(), h.JS, h.Names)
	require.NoError(t, err)
	var keys []lane.ParkedKey
	require.Eventually(t, func() bool {
		keys, err = adm.List(context.Background())
		return err == nil && len(keys) == 0
	}, 30*time.Second, 50*time.Millisecond, "keys still held or parked: %+v", &keys)
}

// alertConsumer reads the alerts stream from now on.
func alertConsumer(t *testing.T, h *harness.Harness) jetstream.Consumer {
	t.Helper()
	c, err := h.JS.CreateOrUpdateConsumer(context.Background(), h.Names.AlertsStream(), jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: []string{h.Names.AlertSubject(">")},
	})
	require.NoError(t, err)
	return c
}

// TestOneFailureIsRetriedInPlaceBeforeSteppingAside: with the shipped
// step_aside.in_place (2), a request that fails once or twice is tried
// again in place 5ms later, with the message in the lane's hand, and
// nothing is parked; one that fails three times steps aside. Either way
// every event arrives, in order per key.
func TestOneFailureIsRetriedInPlaceBeforeSteppingAside(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fails     int
		wantAside bool
	}{
		{"fails once: retried in place", 1, false},
		{"fails twice: retried in place again", 2, false},
		{"fails three times: steps aside", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := stepAsideConfig()
			cfg.StepAside.InPlace = dispatcher.DefaultConfig().StepAside.InPlace
			h := newOnePartitionHarness(t, cfg)

			p := plan(t, 300, 30, 31)
			victims := map[string]bool{}
			seen := map[string]bool{}
			for _, e := range p.Events {
				if !seen[e.Key] && len(victims) < 5 {
					victims[e.ID] = true
					h.Sim.RejectTimes(e.ID, http.StatusServiceUnavailable, tc.fails)
				}
				seen[e.Key] = true
			}
			<-publishAsync(t, h, p)
			rep := waitDelivered(t, h, p, 60*time.Second)
			requireInOrder(t, rep)

			tries := map[string][]int{}
			for _, r := range h.Sim.Records() {
				if victims[r.ID()] {
					tries[r.ID()] = append(tries[r.ID()], r.Status/100)
				}
			}
			require.Len(t, tries, len(victims))
			for id, st := range tries {
				require.GreaterOrEqual(t, len(st), tc.fails+1, "event %s: %v", id, st)
				for i := range tc.fails {
					require.Equal(t, 5, st[i], "event %s: %v", id, st)
				}
				require.Equal(t, 2, st[tc.fails], "event %s: %v", id, st)
			}
			st, err := h.JS.Stream(context.Background(), h.Names.ParkedStream())
			require.NoError(t, err)
			info, err := st.Info(context.Background())
			require.NoError(t, err)
			require.Equal(t, tc.wantAside, info.State.LastSeq > 0,
				"messages ever parked aside: %d", info.State.LastSeq)
			requireNoKeyHeld(t, h)
			requireNothingParked(t, h)
		})
	}
}

// newOnePartitionHarness runs the enricher and the dispatcher (cfg) over
// one partition, with the sample customers and 150 more.
func newOnePartitionHarness(t *testing.T, cfg dispatcher.Config) *harness.Harness {
	t.Helper()
	h, err := harness.New(context.Background(), harness.Options{
		Dir:            t.TempDir(),
		Topology:       topology.Config{Partitions: 1, AckWait: 3 * time.Second},
		Dispatcher:     cfg,
		ExtraCustomers: 150,
		Logger:         logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	require.NoError(t, h.StartDispatcher(context.Background()))
	require.NoError(t, h.StartEnricher(context.Background()))
	return h
}
