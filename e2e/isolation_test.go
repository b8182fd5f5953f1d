package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/loadgen"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// Per-key poison isolation end to end: the CRM rejects one event of key K
// with 422 (default policy: park); K's later events are parked behind it
// while every other key is delivered; after the CRM is "fixed", a replay
// delivers K's events in their original order, each exactly once.
func TestRejectedKeyIsIsolatedAndReplayed(t *testing.T) {
	h := newHarness(t, crmsim.Config{})
	p := plan(t, 300, 20, 7)
	want := p.Expected()
	var k string
	for key, ids := range want {
		if len(ids) >= 4 && (k == "" || key < k) {
			k = key
		}
	}
	require.NotEmpty(t, k)
	bad := want[k][1]
	h.Sim.Reject(bad, 422)

	ctx := context.Background()
	res, err := loadgen.PublishJetStream(ctx, h.JS, h.Names, p.Events, loadgen.PublishOptions{Concurrency: 16})
	require.NoError(t, err)
	require.Equal(t, 300, res.Published)

	held := len(want[k]) - 1 // everything of K from the rejected event on
	var rep crmsim.Report
	require.Eventually(t, func() bool {
		rep = h.Sim.Check(want)
		return rep.Totals.Missing == held
	}, 60*time.Second, 100*time.Millisecond, "every other key must flow")
	require.Zero(t, rep.Totals.ReorderedKeys)
	require.Len(t, rep.Keys, 1)
	require.Equal(t, k, rep.Keys[0].Key)
	require.Equal(t, want[k][1:], rep.Keys[0].Missing)

	admin, err := lane.OpenParked(ctx, h.JS, h.Names)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		msgs, err := admin.Messages(ctx, topology.StageDispatcher, k)
		return err == nil && len(msgs) == held
	}, 10*time.Second, 50*time.Millisecond)
	pk, err := admin.Get(ctx, topology.StageDispatcher, k)
	require.NoError(t, err)
	require.Equal(t, held, pk.Count)

	h.Sim.Reject(bad, 0) // the CRM is fixed
	rr, err := admin.Replay(ctx, topology.StageDispatcher, k, 20*time.Second, 5)
	require.NoError(t, err)
	require.True(t, rr.Unblocked)
	require.Equal(t, held, rr.Republished)

	rep = waitDelivered(t, h, p, 30*time.Second)
	requireInOrder(t, rep)
	require.Zero(t, rep.Totals.DuplicateIDs, "each event reaches the CRM exactly once")
	require.Equal(t, 300, rep.Totals.Delivered)
	requireNothingParked(t, h)
	_, err = admin.Get(ctx, topology.StageDispatcher, k)
	require.ErrorIs(t, err, lane.ErrNotParked)
}
