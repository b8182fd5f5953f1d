package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
)

// Two dispatcher replicas share the 16 dispatch lanes (each lane pinned to
// one of them); the one holding lanes is killed mid-stream while the CRM
// fails 5 % of requests. The other takes its lanes over after about
// pinned_ttl (3s here, the minimum; ack_wait for the message in flight): nothing lost,
// no key reordered, nothing parked. Repeats of one Idempotency-Key (the
// request in flight when the replica died) are allowed and counted.
func TestDispatcherReplicaKilledLosesNothing(t *testing.T) {
	h := newHarness(t, crmsim.Config{ErrorRate: 0.05, Seed: 5, Latency: 200 * time.Microsecond})
	ctx := context.Background()
	replica, err := h.StartDispatcherReplica(ctx)
	require.NoError(t, err)
	p := plan(t, 3000, 100, 5)
	done := publishAsync(t, h, p)

	require.Eventually(t, func() bool { return h.Sim.Delivered() >= 1000 }, 60*time.Second, 2*time.Millisecond)
	// Kill the first dispatcher if it works any lane (it settled messages on
	// it), else the replica, which then works them all.
	owned := 0
	for _, l := range h.Dispatcher().Stats().Lanes {
		if l.Settled > 0 {
			owned++
		}
	}
	if owned > 0 {
		h.KillDispatcher()
	} else {
		h.KillDispatcherReplica(replica)
	}
	t.Logf("killed the dispatcher working %d of 16 lanes (0: the replica, working all) at %d delivered",
		owned, h.Sim.Delivered())

	res := <-done
	require.Equal(t, 3000, res.Published)
	rep := waitDelivered(t, h, p, 60*time.Second)
	requireInOrder(t, rep)
	requireNothingParked(t, h)
	t.Logf("duplicates at the CRM (same Idempotency-Key): %d ids, %d extra deliveries",
		rep.Totals.DuplicateIDs, rep.Totals.ExtraDeliveries)
}
