package topology_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

var laneStages = []topology.Stage{topology.StageEnricher, topology.StageDispatcher, topology.StageInbound}

// repartitionEnv starts a server with the events, dispatch and inbound
// streams of n partitions and every lane consumer, as the services make them.
func repartitionEnv(t *testing.T, partitions int) (jetstream.JetStream, topology.Names) {
	t.Helper()
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(partitions))
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	require.NoError(t, names.EnsureInbound(ctx, js))
	for _, stage := range laneStages {
		for p := range partitions {
			stream, filter := names.StageFilter(stage, p)
			_, err := js.CreateOrUpdateConsumer(ctx, stream, names.LaneConsumerConfig(stage, p, filter))
			require.NoError(t, err)
		}
	}
	return js, names
}

func publishEvents(t *testing.T, js jetstream.JetStream, names topology.Names, round, keys int) {
	t.Helper()
	ctx := context.Background()
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		_, err := js.Publish(ctx, names.EventSubject("order", key), []byte(fmt.Sprintf(`{"round":%d}`, round)))
		require.NoError(t, err)
		_, err = js.Publish(ctx, names.InboundSubject("lead", key), []byte(`{}`))
		require.NoError(t, err)
	}
}

// drainLanes acks every message of every lane consumer on the input
// streams, as the enricher and inbound writer would, up to the last message
// of the lane's filter.
func drainLanes(t *testing.T, js jetstream.JetStream, names topology.Names) {
	t.Helper()
	ctx := context.Background()
	for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageInbound} {
		for p := range names.Partitions() {
			stream, filter := names.StageFilter(stage, p)
			s, err := js.Stream(ctx, stream)
			require.NoError(t, err)
			last, err := s.GetLastMsgForSubject(ctx, filter)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			require.NoError(t, err)
			c, err := js.Consumer(ctx, stream, names.ConsumerName(stage, p))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			require.NoError(t, err)
			for {
				ci, err := c.Info(ctx)
				require.NoError(t, err)
				if ci.AckFloor.Stream >= last.Sequence {
					break
				}
				b, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second), jetstream.FetchPriorityGroup(topology.LanePriorityGroup))
				require.NoError(t, err)
				for m := range b.Messages() {
					require.NoError(t, m.DoubleAck(ctx))
				}
			}
			// Let the pin go: the next drain pulls with a new Consumer
			// object, which would wait PinnedTTL for this pin to expire.
			require.NoError(t, s.UnpinConsumer(ctx, c.CachedInfo().Name, topology.LanePriorityGroup))
		}
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream, stream string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	return s.CachedInfo().Config
}

func laneNames(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	var out []string
	for n := range s.ConsumerNames(context.Background()).Name() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func wantLanes(stage topology.Stage, n int) []string {
	var out []string
	for p := range n {
		out = append(out, fmt.Sprintf("%s-%03d", stage, p))
	}
	return out
}

func pending(t *testing.T, js jetstream.JetStream, stream, consumer string) uint64 {
	t.Helper()
	c, err := js.Consumer(context.Background(), stream, consumer)
	require.NoError(t, err)
	return c.CachedInfo().NumPending
}

// The whole procedure at the stream level, 4 -> 8 -> 3: the switch refuses
// while intake is open, closing intake refuses publishes without an ack,
// the new lanes do not re-read the history stored under the old count, new
// events land in the lane of their key under the new count, and the lane
// fences are cleared.
func TestSwitchPartitionsMovesLanesPastHistory(t *testing.T) {
	js, names := repartitionEnv(t, 4)
	ctx := context.Background()
	fences, err := js.KeyValue(ctx, names.FenceBucket())
	require.NoError(t, err)
	_, err = fences.Put(ctx, topology.FenceKey(topology.StageEnricher, 3), topology.Fence{Seq: 7}.Marshal())
	require.NoError(t, err)

	publishEvents(t, js, names, 1, 50)
	drainLanes(t, js, names)
	_, err = names.SwitchPartitions(ctx, js, 8)
	require.ErrorIs(t, err, topology.ErrIntakeOpen)

	closed, err := names.CloseIntake(ctx, js, "test")
	require.NoError(t, err)
	require.Equal(t, []string{names.EventsStream(), names.InboundStream()}, closed)
	_, err = js.Publish(ctx, names.EventSubject("order", "k1"), []byte(`{}`))
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse, "a closed intake answers no responders: no ack")
	again, err := names.CloseIntake(ctx, js, "test")
	require.NoError(t, err)
	require.Empty(t, again, "closing twice is a no-op")
	st, err := names.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.True(t, st.Drained(), "%v", st.Blockers)
	require.Equal(t, 4, st.Partitions())

	res, err := names.SwitchPartitions(ctx, js, 8)
	require.NoError(t, err)
	require.Equal(t, 4, res.From)
	require.Len(t, res.Deleted, 12)
	require.Len(t, res.Created, 24)
	require.Equal(t, 24, res.FencesWritten)
	require.Zero(t, res.FencesRemoved)
	for _, stream := range []string{names.EventsStream(), names.InboundStream()} {
		cfg := streamConfig(t, js, stream)
		n, ok := topology.TransformPartitions(cfg)
		require.True(t, ok)
		require.Equal(t, 8, n, stream)
		require.NotContains(t, cfg.Metadata, topology.MetaSwitch)
	}
	require.Equal(t, wantLanes(topology.StageEnricher, 8), laneNames(t, js, names.EventsStream()))
	require.Equal(t, wantLanes(topology.StageDispatcher, 8), laneNames(t, js, names.DispatchStream()))
	require.Equal(t, wantLanes(topology.StageInbound, 8), laneNames(t, js, names.InboundStream()))
	// Partition 1's filter holds history of other keys (stored under 4
	// partitions), yet the new lane does not deliver it.
	es, err := js.Stream(ctx, names.EventsStream())
	require.NoError(t, err)
	_, err = es.GetLastMsgForSubject(ctx, names.EventsPartitionFilter(1))
	require.NoError(t, err, "history is kept")
	require.Zero(t, pending(t, js, names.EventsStream(), "enricher-001"))
	for _, stage := range laneStages {
		for p := range 8 {
			fence, err := names.WithPartitions(8).LaneFence(ctx, js, stage, p)
			require.NoError(t, err)
			stream, _ := names.StageFilter(stage, p)
			want := res.Start[stream] - 1
			if stage == topology.StageDispatcher {
				want = 0 // the dispatch queue never held anything here
			}
			require.Equal(t, want, fence, "fence of %s lane %d: where the new lane starts", stage, p)
		}
	}

	res, err = names.SwitchPartitions(ctx, js, 8)
	require.NoError(t, err)
	require.True(t, res.NoChange, "running the switch again changes nothing")

	_, err = names.OpenIntake(ctx, js)
	require.ErrorIs(t, err, topology.ErrPartitionsChanged, "the config opening intake must have the new count")
	n8 := names.WithPartitions(8)
	opened, err := n8.OpenIntake(ctx, js)
	require.NoError(t, err)
	require.Len(t, opened, 2)

	publishEvents(t, js, n8, 2, 50)
	want := map[int]uint64{}
	for k := range 50 {
		want[n8.PartitionOf(fmt.Sprintf("k%d", k))]++
	}
	for p := range 8 { // NumPending is counted a moment after the store
		require.Eventually(t, func() bool {
			return want[p] == pending(t, js, names.EventsStream(), n8.ConsumerName(topology.StageEnricher, p))
		}, 5*time.Second, 10*time.Millisecond, "partition %d", p)
	}

	// 8 -> 3: the lanes 3..7 go.
	drainLanes(t, js, n8)
	_, err = n8.CloseIntake(ctx, js, "test")
	require.NoError(t, err)
	res, err = n8.SwitchPartitions(ctx, js, 3)
	require.NoError(t, err)
	require.Equal(t, 8, res.From)
	require.Equal(t, wantLanes(topology.StageEnricher, 3), laneNames(t, js, names.EventsStream()))
	require.Equal(t, wantLanes(topology.StageDispatcher, 3), laneNames(t, js, names.DispatchStream()))
	require.Equal(t, 9, res.FencesWritten)
	require.Equal(t, 15, res.FencesRemoved, "the fences of lanes 3..7 go")
	n3 := names.WithPartitions(3)
	require.NoError(t, n3.Ensure(ctx, js), "a service of the new count starts")
	st, err = n3.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.False(t, st.Inputs[0].Open, "a service's Ensure keeps intake closed until `sluice partitions open`")
	_, err = n3.OpenIntake(ctx, js)
	require.NoError(t, err)
	st, err = n3.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.True(t, st.Inputs[0].Open, "open reopens the events intake")
	require.ErrorIs(t, names.Ensure(ctx, js), topology.ErrPartitionsChanged, "a service of the old count is refused")
}

// Every unsafe state is refused, and a refused switch changes nothing.
func TestSwitchPartitionsRefusesUnsafeStates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, js jetstream.JetStream, names topology.Names)
		want  error
		says  string
	}{
		{"intake open", func(t *testing.T, js jetstream.JetStream, names topology.Names) {}, topology.ErrIntakeOpen, "drain"},
		{"a lane holds an event", func(t *testing.T, js jetstream.JetStream, names topology.Names) {
			publishEvents(t, js, names, 1, 1)
			closeIntake(t, js, names)
		}, topology.ErrNotDrained, "lane(s) hold events"},
		{"the dispatch queue holds a request", func(t *testing.T, js jetstream.JetStream, names topology.Names) {
			_, err := js.Publish(context.Background(), names.DispatchSubject(2, "order", "k1"), []byte(`{}`))
			require.NoError(t, err)
			closeIntake(t, js, names)
		}, topology.ErrNotDrained, "holds 1 request"},
		{"a partition has events but no lane", func(t *testing.T, js jetstream.JetStream, names topology.Names) {
			publishEvents(t, js, names, 1, 20)
			require.NoError(t, js.DeleteConsumer(context.Background(), names.EventsStream(), "enricher-002"))
			drainLanes(t, js, names)
			closeIntake(t, js, names)
		}, topology.ErrNotDrained, "no lane consumer enricher-002"},
		{"a service still pulls", func(t *testing.T, js jetstream.JetStream, names topology.Names) {
			c, err := js.Consumer(context.Background(), names.DispatchStream(), "dispatcher-001")
			require.NoError(t, err)
			cc, err := c.Consume(func(jetstream.Msg) {}, jetstream.PullPriorityGroup(topology.LanePriorityGroup))
			require.NoError(t, err)
			t.Cleanup(cc.Stop)
			require.Eventually(t, func() bool {
				c, err := js.Consumer(context.Background(), names.DispatchStream(), "dispatcher-001")
				return err == nil && c.CachedInfo().NumWaiting > 0
			}, 5*time.Second, 20*time.Millisecond)
			closeIntake(t, js, names)
		}, topology.ErrLanesInUse, "dispatcher-001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, names := repartitionEnv(t, 4)
			tc.setup(t, js, names)
			_, err := names.SwitchPartitions(context.Background(), js, 8)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.says)
			n, _ := topology.TransformPartitions(streamConfig(t, js, names.EventsStream()))
			require.Equal(t, 4, n, "the transform is unchanged")
			require.NotContains(t, laneNames(t, js, names.DispatchStream()), "dispatcher-007")
		})
	}
}

func closeIntake(t *testing.T, js jetstream.JetStream, names topology.Names) {
	t.Helper()
	_, err := names.CloseIntake(context.Background(), js, "test")
	require.NoError(t, err)
}

// racingJS stands for an operator reopening intake in the middle of a
// switch (a service's Ensure no longer does): just before the switch's
// first transform update, intake opens and a producer's event is stored.
type racingJS struct {
	jetstream.JetStream
	t     *testing.T
	names topology.Names
	fired bool
}

func (r *racingJS) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if !r.fired && cfg.Metadata[topology.MetaSwitch] != "" {
		r.fired = true
		_, err := r.names.OpenIntake(ctx, r.JetStream)
		require.NoError(r.t, err)
		_, err = r.JetStream.Publish(ctx, r.names.EventSubject("order", "late"), []byte(`{}`))
		require.NoError(r.t, err)
	}
	return r.JetStream.UpdateStream(ctx, cfg)
}

func TestSwitchPartitionsRollsBackWhenAnEventIsStoredMeanwhile(t *testing.T) {
	js, names := repartitionEnv(t, 4)
	ctx := context.Background()
	closeIntake(t, js, names)
	_, err := names.SwitchPartitions(ctx, &racingJS{JetStream: js, t: t, names: names}, 8)
	require.ErrorIs(t, err, topology.ErrNotDrained)
	require.ErrorContains(t, err, "rolled back")
	cfg := streamConfig(t, js, names.EventsStream())
	n, _ := topology.TransformPartitions(cfg)
	require.Equal(t, 4, n, "transform rolled back")
	require.NotContains(t, cfg.Metadata, topology.MetaSwitch)
	require.Equal(t, wantLanes(topology.StageEnricher, 4), laneNames(t, js, names.EventsStream()), "lanes untouched")
	require.Equal(t, uint64(1), pending(t, js, names.EventsStream(), names.ConsumerName(topology.StageEnricher, names.PartitionOf("late"))),
		"the late event waits in its old lane")
}

// failingResetJS fails the n-th consumer reset, as a switch cut off midway.
type failingResetJS struct {
	jetstream.JetStream
	n, calls int
}

func (f *failingResetJS) ResetConsumerToSequence(ctx context.Context, stream, consumer string, seq uint64) (*jetstream.ConsumerResetResponse, error) {
	f.calls++
	if f.calls == f.n {
		return nil, errors.New("connection lost")
	}
	return f.JetStream.ResetConsumerToSequence(ctx, stream, consumer, seq)
}

func TestSwitchPartitionsCanBeRunAgainAfterAnInterruption(t *testing.T) {
	js, names := repartitionEnv(t, 4)
	ctx := context.Background()
	publishEvents(t, js, names, 1, 30)
	drainLanes(t, js, names)
	closeIntake(t, js, names)

	_, err := names.SwitchPartitions(ctx, &failingResetJS{JetStream: js, n: 3}, 8)
	require.ErrorContains(t, err, "run the switch again")
	cfg := streamConfig(t, js, names.EventsStream())
	require.Equal(t, "from=4 to=8 start=31", cfg.Metadata[topology.MetaSwitch])
	require.NotContains(t, laneNames(t, js, names.EventsStream()), "enricher-002", "a lane that would re-read history is removed")

	_, err = names.WithPartitions(8).OpenIntake(ctx, js)
	require.ErrorIs(t, err, topology.ErrSwitchUnfinished)
	_, err = names.SwitchPartitions(ctx, js, 5)
	require.ErrorIs(t, err, topology.ErrSwitchUnfinished)
	st, err := names.ReadPartitionState(ctx, js)
	require.NoError(t, err)
	require.True(t, st.Drained(), "an interrupted switch may be re-run: %v", st.Blockers)

	res, err := names.SwitchPartitions(ctx, js, 8)
	require.NoError(t, err)
	require.Equal(t, 4, res.From)
	require.Equal(t, wantLanes(topology.StageEnricher, 8), laneNames(t, js, names.EventsStream()))
	for p := range 8 {
		require.Zero(t, pending(t, js, names.EventsStream(), names.WithPartitions(8).ConsumerName(topology.StageEnricher, p)))
	}
	require.NotContains(t, streamConfig(t, js, names.EventsStream()).Metadata, topology.MetaSwitch)
}

// Every service start runs Ensure, so a config whose count differs from
// the streams' is refused there, naming the procedure.
func TestEnsureRefusesAChangedPartitionCount(t *testing.T) {
	js, names := repartitionEnv(t, 4)
	ctx := context.Background()
	other := names.WithPartitions(8)
	for name, ensure := range map[string]func(context.Context, topology.StreamManager) error{
		"Ensure": other.Ensure, "EnsureInbound": other.EnsureInbound,
	} {
		err := ensure(ctx, js)
		require.ErrorIs(t, err, topology.ErrPartitionsChanged, name)
		require.ErrorContains(t, err, `"Changing the partition count" in docs/runbook.md`, name)
	}
}

func TestTransformPartitions(t *testing.T) {
	for dest, want := range map[string]int{
		"p.events.{{partition(16,2)}}.{{wildcard(1)}}.{{wildcard(2)}}": 16,
		"p.events.{{ partition(3, 2) }}.{{wildcard(1)}}":               3,
		"p.events.{{wildcard(1)}}":                                     0,
	} {
		n, ok := topology.TransformPartitions(jetstream.StreamConfig{
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: "p.events.*.*", Destination: dest}})
		require.Equal(t, want, n, dest)
		require.Equal(t, want > 0, ok, dest)
	}
	_, ok := topology.TransformPartitions(jetstream.StreamConfig{})
	require.False(t, ok)
}

// A consumer's NumPending is counted a moment after the store acks the
// publish; the drain check must not call a lane empty in that moment (the
// switch would start the new lanes after an event nobody enriched).
func TestReadPartitionStateSeesAnEventStoredAMomentAgo(t *testing.T) {
	js, names := repartitionEnv(t, 4)
	ctx := context.Background()
	lane := names.ConsumerName(topology.StageEnricher, names.PartitionOf("k1"))
	for i := range 30 {
		_, err := js.Publish(ctx, names.EventSubject("order", "k1"), []byte(`{}`))
		require.NoError(t, err)
		st, err := names.ReadPartitionState(ctx, js)
		require.NoError(t, err)
		require.True(t, slices.ContainsFunc(st.Blockers, func(b string) bool { return strings.Contains(b, lane) }),
			"round %d: %v", i, st.Blockers)
		drainLanes(t, js, names)
	}
}
