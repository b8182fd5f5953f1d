package lane_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// A dispatcher lane's consumer lives in memory (topology.LaneConsumerConfig:
// the work queue is its position). A NATS restart loses it without a word to
// the pull waiting on it; the lane notices the quiet pull, recreates the
// consumer and goes on at the work queue's first message: every message
// once, in order.
func TestInMemoryConsumerIsRecreatedAfterANATSRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := meshtest.RunServer(t, dir)
	port := s.Addr().(*net.TCPAddr).Port
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(1))
	require.NoError(t, names.Ensure(ctx, js))
	stream, _ := names.StageFilter(topology.StageDispatcher, 0)
	consumer := names.ConsumerName(topology.StageDispatcher, 0)
	publishWork := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			m := nats.NewMsg(names.DispatchSubject(0, "t", "k"))
			m.Data = []byte(fmt.Sprintf("k-%d", i))
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("k-%d", i))
			_, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
		}
	}

	var mu sync.Mutex
	var got []string
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageDispatcher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			got = append(got, string(m.Data))
			mu.Unlock()
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	defer g.Stop(ctx)

	publishWork(0, 20)
	require.Eventually(t, func() bool { return count() == 20 }, 10*time.Second, 10*time.Millisecond)
	c, err := js.Consumer(ctx, stream, consumer)
	require.NoError(t, err)
	require.True(t, c.CachedInfo().Config.MemoryStorage, "a dispatcher lane consumer keeps its state in memory")
	require.Eventually(t, func() bool { // the 20th ack has removed its message
		info, err := js.Stream(ctx, stream)
		return err == nil && info.CachedInfo().State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond)

	s.Shutdown()
	s.WaitForShutdown()
	meshtest.RunServerOn(t, dir, port)
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctx, stream, consumer)
		return err != nil // gone with the server's memory (or not answering yet)
	}, 5*time.Second, 10*time.Millisecond)

	publishWork(20, 40)
	require.Eventually(t, func() bool { return count() >= 40 }, 20*time.Second, 10*time.Millisecond,
		"the lane did not recreate its consumer after the restart (%d of 40 handled)", count())
	mu.Lock()
	defer mu.Unlock()
	for i, b := range got {
		require.Equal(t, fmt.Sprintf("k-%d", i), b)
	}
	require.Len(t, got, 40)
	c, err = js.Consumer(ctx, stream, consumer)
	require.NoError(t, err)
	require.True(t, c.CachedInfo().Config.MemoryStorage)
	require.Equal(t, jetstream.DeliverAllPolicy, c.CachedInfo().Config.DeliverPolicy)
}

// A dispatcher lane consumer made before memory storage keeps its file
// state when the lane updates it (the server refuses to change a
// consumer's storage): the update goes through and the lane works.
func TestExistingFileConsumerKeepsItsStorageOnUpdate(t *testing.T) {
	ctx := context.Background()
	names, js := setup(t, 1)
	stream, filter := names.StageFilter(topology.StageDispatcher, 0)
	old := names.LaneConsumerConfig(topology.StageDispatcher, 0, filter)
	old.MemoryStorage = false
	old.Description = "made by an earlier version"
	_, err := js.CreateOrUpdateConsumer(ctx, stream, old)
	require.NoError(t, err)
	m := nats.NewMsg(names.DispatchSubject(0, "t", "k"))
	m.Data = []byte("k-0")
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)

	handled := make(chan string, 1)
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageDispatcher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			handled <- string(m.Data)
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	defer g.Stop(ctx)
	select {
	case got := <-handled:
		require.Equal(t, "k-0", got)
	case <-time.After(10 * time.Second):
		t.Fatalf("the lane did not work after updating its consumer: %+v", g.Stats()[0])
	}
	c, err := js.Consumer(ctx, stream, names.ConsumerName(topology.StageDispatcher, 0))
	require.NoError(t, err)
	cfg := c.CachedInfo().Config
	require.False(t, cfg.MemoryStorage, "the storage of an existing consumer cannot change")
	require.Equal(t, names.LaneConsumerConfig(topology.StageDispatcher, 0, filter).Description, cfg.Description, "updated")
}
