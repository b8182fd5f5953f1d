package e2e_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/e2e/harness"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/topology"
)

// fastRetry keeps the policy's shape (tries, then pause) with short delays
// so that thousands of flaky requests finish in seconds.
func fastRetry() dispatcher.Config {
	return dispatcher.Config{
		Retry: dispatcher.RetryConfig{Tries: 3, Delay: 20 * time.Millisecond},
		Pause: 300 * time.Millisecond,
	}
}

func logger(t *testing.T) zerolog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	return zerolog.Nop()
}

func newHarness(t *testing.T, sim crmsim.Config) *harness.Harness {
	t.Helper()
	ctx := context.Background()
	h, err := harness.New(ctx, harness.Options{
		Dir:            t.TempDir(),
		Topology:       topology.Config{Partitions: 16, AckWait: 2 * time.Second},
		Dispatcher:     fastRetry(),
		Sim:            sim,
		ExtraCustomers: 150,
		Logger:         logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	require.NoError(t, h.StartDispatcher(ctx))
	require.NoError(t, h.StartEnricher(ctx))
	return h
}

func plan(t *testing.T, events, keys int, seed int64) *loadgen.Plan {
	t.Helper()
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: events, Keys: keys, Seed: seed,
		CustomerIDs: loadgen.Range{Min: 1, Max: 160}, CarIDs: loadgen.Range{Min: 1, Max: 40}})
	require.NoError(t, err)
	return p
}

// publishAsync produces the plan over JetStream in the background, as
// producers do while the pipeline runs.
func publishAsync(t *testing.T, h *harness.Harness, p *loadgen.Plan) <-chan loadgen.Result {
	out := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.PublishJetStream(context.Background(), h.JS, h.Names, p.Events, loadgen.PublishOptions{Concurrency: 64})
		if err != nil {
			t.Errorf("publish: %v", err)
		}
		out <- res
	}()
	return out
}

func waitDelivered(t *testing.T, h *harness.Harness, p *loadgen.Plan, within time.Duration) crmsim.Report {
	t.Helper()
	want := p.Expected()
	var rep crmsim.Report
	if !assert.Eventually(t, func() bool {
		rep = h.Sim.Check(want)
		return rep.Totals.Missing == 0
	}, within, 100*time.Millisecond) {
		// Which keys stopped where, and the lanes' view: a slow machine
		// shows every key a little behind, a stuck lane a few keys far behind.
		t.Fatalf("not everything reached the CRM within %s: %s", within, rep.String())
	}
	return rep
}

func requireInOrder(t *testing.T, rep crmsim.Report) {
	t.Helper()
	if !rep.OK() {
		for i, k := range rep.Keys {
			if i == 5 {
				break
			}
			t.Logf("key %s: missing %v reordered %+v unexpected %v", k.Key, k.Missing, k.Reordered, k.Unexpected)
		}
	}
	require.Zero(t, rep.Totals.Missing, "lost events")
	require.Zero(t, rep.Totals.ReorderedKeys, "keys delivered out of order")
	require.Zero(t, rep.Totals.Unexpected, "unexpected events")
}

func requireNothingParked(t *testing.T, h *harness.Harness) {
	t.Helper()
	st, err := h.JS.Stream(context.Background(), h.Names.ParkedStream())
	require.NoError(t, err)
	require.Zero(t, st.CachedInfo().State.Msgs, "parked events")
}

// Acceptance 1: 10,000 events over 200 keys, a CRM answering 20 % of
// requests with 5xx and down for 5 s in the middle: every event delivered
// exactly once (by Idempotency-Key), per-key order intact, no gaps.
func TestFlakyCRMDeliversEverythingOnceInOrder(t *testing.T) {
	h := newHarness(t, crmsim.Config{ErrorRate: 0.2, Seed: 1})
	p := plan(t, 10_000, 200, 1)
	require.Len(t, p.Keys(), 200)
	done := publishAsync(t, h, p)

	require.Eventually(t, func() bool { return h.Sim.Delivered() >= 3000 }, 60*time.Second, 10*time.Millisecond)
	h.Sim.Outage(5 * time.Second)
	t.Logf("CRM outage of 5s starting at %d delivered", h.Sim.Delivered())

	res := <-done
	require.Equal(t, 10_000, res.Published)
	rep := waitDelivered(t, h, p, 120*time.Second)
	requireInOrder(t, rep)
	require.Zero(t, rep.Totals.DuplicateIDs, "no process died, so the CRM must see each event accepted once")
	require.Equal(t, 10_000, rep.Totals.Delivered)
	requireNothingParked(t, h)
	t.Logf("attempts at the CRM: %d for %d events (%.0f%% injected failures)", rep.Totals.Attempts, rep.Totals.Delivered,
		100*float64(rep.Totals.Attempts-rep.Totals.Delivered)/float64(rep.Totals.Attempts))
}

// Acceptance 2: services stopped abruptly mid-stream and started again, and
// the NATS server restarted on the same store, all while the CRM fails 10 %
// of requests: nothing lost or reordered; duplicates at the CRM are only
// repeats of one Idempotency-Key, counted.
func TestKilledServicesAndRestartedNATSLoseNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, h *harness.Harness)
	}{
		{"dispatcher killed", func(t *testing.T, h *harness.Harness) {
			h.KillDispatcher()
			require.NoError(t, h.StartDispatcher(context.Background()))
		}},
		{"enricher killed", func(t *testing.T, h *harness.Harness) {
			h.KillEnricher()
			require.NoError(t, h.StartEnricher(context.Background()))
		}},
		{"nats restarted", func(t *testing.T, h *harness.Harness) {
			require.NoError(t, h.RestartNATS())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, crmsim.Config{ErrorRate: 0.1, Seed: 2, Latency: 200 * time.Microsecond})
			p := plan(t, 4000, 150, 2)
			done := publishAsync(t, h, p)
			for _, at := range []int{800, 2000} {
				require.Eventually(t, func() bool { return h.Sim.Delivered() >= at }, 60*time.Second, 2*time.Millisecond)
				tc.crash(t, h)
				t.Logf("%s at %d delivered", tc.name, h.Sim.Delivered())
			}
			res := <-done
			require.Equal(t, 4000, res.Published)
			rep := waitDelivered(t, h, p, 120*time.Second)
			requireInOrder(t, rep)
			requireNothingParked(t, h)
			t.Logf("duplicates at the CRM (same Idempotency-Key): %d ids, %d extra deliveries",
				rep.Totals.DuplicateIDs, rep.Totals.ExtraDeliveries)
		})
	}
}
