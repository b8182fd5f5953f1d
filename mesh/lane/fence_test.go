package lane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// A lane consumer made before pinning existed is updated in place to the
// pinned priority group, keeping a running outlet pause.
func TestOldConsumerIsMigratedToPinned(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	stream, filter := names.StageFilter(topology.StageEnricher, 0)
	old := names.LaneConsumerConfig(topology.StageEnricher, 0, filter)
	old.PriorityPolicy, old.PriorityGroups, old.PinnedTTL = jetstream.PriorityPolicyNone, nil, 0
	old.Description = "Sluice enricher lane (before pinning)"
	until := time.Now().Add(time.Hour).UTC()
	old.PauseUntil = &until
	_, err := js.CreateOrUpdateConsumer(ctx, stream, old)
	require.NoError(t, err)

	var rec recorder
	g := startReplica(t, js, names, rec.handler("A", nil))
	defer func() { _ = g.Stop(ctx) }()
	c, err := js.Consumer(ctx, stream, old.Durable)
	require.NoError(t, err)
	ci := c.CachedInfo()
	require.Equal(t, jetstream.PriorityPolicyPinned, ci.Config.PriorityPolicy)
	require.Equal(t, []string{topology.LanePriorityGroup}, ci.Config.PriorityGroups)
	require.Equal(t, names.Config().PinnedTTL, ci.Config.PinnedTTL)
	require.True(t, ci.Paused, "the update cut the outlet pause short")
	require.WithinDuration(t, until, *ci.Config.PauseUntil, time.Second)

	_, err = js.ResumeConsumer(ctx, stream, old.Durable)
	require.NoError(t, err)
	publish(t, js, names, "t1", "k", 3)
	require.Eventually(t, func() bool { return len(rec.snapshot()) == 3 }, 10*time.Second, 10*time.Millisecond)
	require.NotEmpty(t, g.Stats()[0].PinID)
	require.False(t, g.Stats()[0].LastDelivery.IsZero())
}

// A deleted lane consumer is recreated after the lane's fence, so nothing
// applied is delivered again (the events stream keeps days of history);
// a fence of a deleted and recreated stream is ignored.
func TestDeletedConsumerResumesAfterFence(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	stream := names.EventsStream()
	consumer := names.ConsumerName(topology.StageEnricher, 0)
	var rec recorder
	g := startReplica(t, js, names, rec.handler("A", nil))
	defer func() { _ = g.Stop(ctx) }()
	publish(t, js, names, "t1", "k", 10)
	// The fence reaches the bucket within a flush (200ms).
	require.Eventually(t, func() bool {
		fence, err := names.LaneFence(ctx, js, topology.StageEnricher, 0)
		return err == nil && fence == 10
	}, 10*time.Second, 10*time.Millisecond)
	cfg, err := names.LaneRecreateConfig(ctx, js, topology.StageEnricher, 0)
	require.NoError(t, err)
	require.Equal(t, jetstream.DeliverByStartSequencePolicy, cfg.DeliverPolicy)
	require.Equal(t, uint64(11), cfg.OptStartSeq)

	// The lane notices the deletion and recreates the consumer itself.
	require.NoError(t, js.DeleteConsumer(ctx, stream, consumer))
	publishKeys(t, js, names, []string{"k"}, 10, 13)
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= 13 }, 15*time.Second, 10*time.Millisecond)
	c, err := js.Consumer(ctx, stream, consumer)
	require.NoError(t, err)
	require.Equal(t, uint64(11), c.CachedInfo().Config.OptStartSeq)
	var bodies []string
	for _, h := range rec.snapshot() {
		bodies = append(bodies, h.body)
	}
	for i, b := range bodies {
		require.Equal(t, fmt.Sprintf("k-%d", i), b, "a message was handled again after the recreation")
	}
	require.Len(t, bodies, 13)
	require.Zero(t, g.Stats()[0].Fenced)

	// A new stream numbers from 1 again: the old fence must not skip it.
	require.NoError(t, js.DeleteStream(ctx, stream))
	require.NoError(t, names.Ensure(ctx, js))
	fence, err := names.LaneFence(ctx, js, topology.StageEnricher, 0)
	require.NoError(t, err)
	require.Zero(t, fence, "a fence of the deleted stream applies to the new one")
	publishKeys(t, js, names, []string{"n"}, 0, 3)
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= 16 }, 15*time.Second, 10*time.Millisecond)
	require.Zero(t, g.Stats()[0].Fenced)
}

// A message the lane already applied (its ack was lost) is recognised when
// it is delivered again and not handed to the handler a second time.
func TestRedeliveryBelowFenceIsSkipped(t *testing.T) {
	names, js := setup(t, 1)
	ctx := context.Background()
	var rec recorder
	g := startReplica(t, js, names, rec.handler("A", nil))
	publish(t, js, names, "t1", "k", 3)
	require.Eventually(t, func() bool { return g.Stats()[0].Fence == 3 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, g.Stop(ctx))

	// Rewind the consumer (as an operator resetting it would): the lane
	// skips what is at or below the fence.
	stream := names.EventsStream()
	require.NoError(t, js.DeleteConsumer(ctx, stream, names.ConsumerName(topology.StageEnricher, 0)))
	_, filter := names.StageFilter(topology.StageEnricher, 0)
	_, err := js.CreateOrUpdateConsumer(ctx, stream, names.LaneConsumerConfig(topology.StageEnricher, 0, filter))
	require.NoError(t, err)
	publishKeys(t, js, names, []string{"k"}, 3, 4)
	g2, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: rec.handler("B", nil)})
	require.NoError(t, err)
	require.NoError(t, g2.Start(ctx))
	defer func() { _ = g2.Stop(ctx) }()
	require.Eventually(t, func() bool { return len(rec.snapshot()) == 4 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return g2.Stats()[0].Fenced == 3 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "k-3", rec.snapshot()[3].body)
	require.Equal(t, "B", rec.snapshot()[3].replica)
}
