package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/e2e/harness"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// Node loss in a 3-node cluster with R3 streams: the node leading the
// dispatch stream, or the node the dispatcher is connected to, is killed
// mid-stream and restarted later, while the CRM fails a few requests.
// Nothing may be lost or reordered at the CRM; duplicates (one
// Idempotency-Key delivered twice) are counted and logged.
func TestClusterNodeLossLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		victim func(t *testing.T, c *meshtest.Cluster, h *harness.Harness) int
	}{
		{"dispatch stream leader killed", func(t *testing.T, c *meshtest.Cluster, h *harness.Harness) int {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			i, err := c.StreamLeader(ctx, h.JS, h.Names.DispatchStream())
			require.NoError(t, err)
			require.GreaterOrEqual(t, i, 0, "dispatch stream has no leader")
			return i
		}},
		{"dispatcher's server killed", func(t *testing.T, c *meshtest.Cluster, h *harness.Harness) int {
			nc := h.DispatcherConn()
			require.NotNil(t, nc)
			i := c.Index(nc.ConnectedServerName())
			require.GreaterOrEqual(t, i, 0, "dispatcher connected to %q", nc.ConnectedServerName())
			return i
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := meshtest.RunCluster(t, 3)
			ctx := context.Background()
			h, err := harness.New(ctx, harness.Options{
				Dir:            t.TempDir(),
				URLs:           c.URLs(),
				Topology:       topology.Config{Partitions: 8, AckWait: 2 * time.Second, Replicas: 3},
				Dispatcher:     fastRetry(),
				Sim:            crmsim.Config{ErrorRate: 0.05, Seed: 5, Latency: 200 * time.Microsecond},
				ExtraCustomers: 150,
				Logger:         logger(t),
			})
			require.NoError(t, err)
			t.Cleanup(h.Close)
			require.NoError(t, h.StartDispatcher(ctx))
			require.NoError(t, h.StartEnricher(ctx))

			p := plan(t, 3000, 120, 5)
			done := publishAsync(t, h, p)
			require.Eventually(t, func() bool { return h.Sim.Delivered() >= 600 }, 30*time.Second, 2*time.Millisecond)

			victim := tc.victim(t, c, h)
			at := h.Sim.Delivered()
			c.Kill(victim)
			t.Logf("killed node %d (%s) at %d delivered", victim, c.Name(victim), at)
			// The pipeline must go on with one node down before it comes back.
			require.Eventually(t, func() bool { return h.Sim.Delivered() >= at+300 }, 30*time.Second,
				5*time.Millisecond, "no progress with node %d down", victim)
			c.Restart(victim)
			t.Logf("restarted node %d at %d delivered", victim, h.Sim.Delivered())

			res := <-done
			require.Equal(t, 3000, res.Published)
			rep := waitDelivered(t, h, p, 45*time.Second)
			requireInOrder(t, rep)
			requireNothingParked(t, h)
			t.Logf("duplicates at the CRM (same Idempotency-Key): %d ids, %d extra deliveries; attempts %d",
				rep.Totals.DuplicateIDs, rep.Totals.ExtraDeliveries, rep.Totals.Attempts)
		})
	}
}
