package topology_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// countingJS counts stream creates/updates Ensure sends.
type countingJS struct {
	jetstream.JetStream
	writes atomic.Int32
}

func (c *countingJS) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.writes.Add(1)
	return c.JetStream.CreateOrUpdateStream(ctx, cfg)
}

func (c *countingJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.writes.Add(1)
	return c.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}

func TestEnsureLeavesAnUnchangedStreamAlone(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := meshtest.Topology(4)
	cj := &countingJS{JetStream: js}
	names := topology.New(cfg)
	require.NoError(t, names.Ensure(ctx, cj))
	require.NoError(t, names.EnsureInbound(ctx, cj))
	require.NoError(t, names.EnsureWatchdog(ctx, cj))
	created := cj.writes.Load()
	require.Positive(t, created)

	cj.writes.Store(0)
	require.NoError(t, names.Ensure(ctx, cj))
	require.NoError(t, names.EnsureInbound(ctx, cj))
	require.NoError(t, names.EnsureWatchdog(ctx, cj))
	require.Zero(t, cj.writes.Load(), "a second start must not rewrite unchanged streams or buckets")

	// A changed setting is applied.
	cfg.EventsMaxAge = 3 * time.Hour
	require.NoError(t, topology.New(cfg).Ensure(ctx, cj))
	require.Equal(t, int32(1), cj.writes.Load(), "only the events stream changed")
	st, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	require.Equal(t, 3*time.Hour, st.CachedInfo().Config.MaxAge)

	// A bucket changed by hand is put back.
	cj.writes.Store(0)
	_, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.FenceBucket(), Description: "changed by hand"})
	require.NoError(t, err)
	require.NoError(t, topology.New(cfg).Ensure(ctx, cj))
	require.Equal(t, int32(1), cj.writes.Load(), "only the fence bucket differed")
}

func TestEnsureKeepsAClosedIntakeClosed(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	names := topology.New(meshtest.Topology(4))
	require.NoError(t, names.Ensure(ctx, js))
	require.NoError(t, names.EnsureInbound(ctx, js))
	closed, err := names.CloseIntake(ctx, js, "test drain")
	require.NoError(t, err)
	require.NotEmpty(t, closed)

	// A service (re)starting mid-procedure runs Ensure again.
	require.NoError(t, names.Ensure(ctx, js))
	require.NoError(t, names.EnsureInbound(ctx, js))
	st, err := names.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.False(t, st.Open(), "Ensure reopened intake during a partition change")

	_, err = names.OpenIntake(ctx, js)
	require.NoError(t, err)
	st, err = names.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.True(t, st.Open())
}
