package lane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	e := newRestartEnv(t)
	g := e.start(t)
	defer g.Stop(ctx)

	e.publishWork(t, 0, 20)
	require.Eventually(t, func() bool { return e.count() == 20 }, 10*time.Second, 10*time.Millisecond)
	c, err := e.js.Consumer(ctx, e.stream, e.consumer)
	require.NoError(t, err)
	require.True(t, c.CachedInfo().Config.MemoryStorage, "a dispatcher lane consumer keeps its state in memory")
	require.Eventually(t, func() bool { // the 20th ack has removed its message
		info, err := e.js.Stream(ctx, e.stream)
		return err == nil && info.CachedInfo().State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond)

	e.restartNATS(t)
	e.publishWork(t, 20, 40)
	require.Eventually(t, func() bool { return e.count() >= 40 }, 20*time.Second, 10*time.Millisecond,
		"the lane did not recreate its consumer after the restart (%d of 40 handled)", e.count())
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, b := range e.got {
		require.Equal(t, fmt.Sprintf("k-%d", i), b)
	}
	require.Len(t, e.got, 40)
	c, err = e.js.Consumer(ctx, e.stream, e.consumer)
	require.NoError(t, err)
	require.True(t, c.CachedInfo().Config.MemoryStorage)
	require.Equal(t, jetstream.DeliverAllPolicy, c.CachedInfo().Config.DeliverPolicy)
}

// An operator's pause of a dispatcher lane (`sluice pause`: an audit
// record, then the consumer's pause) is not lost with the in-memory
// consumer: the lane recreates it paused until the recorded end, and
// nothing is handled until it is resumed.
func TestOperatorPauseSurvivesANATSRestart(t *testing.T) {
	ctx := context.Background()
	e := newRestartEnv(t)
	g := e.start(t)
	defer g.Stop(ctx)
	e.publishWork(t, 0, 1)
	require.Eventually(t, func() bool { return e.count() == 1 }, 10*time.Second, 10*time.Millisecond)

	until := time.Now().Add(time.Hour).UTC()
	rec, err := json.Marshal(topology.AuditRecord{Action: topology.AuditPause, Consumer: e.consumer, Until: &until,
		By: "test", At: time.Now(), Source: "cli"})
	require.NoError(t, err)
	_, err = e.js.Publish(ctx, e.names.AuditSubject(topology.AuditPause), rec)
	require.NoError(t, err)
	_, err = e.js.PauseConsumer(ctx, e.stream, e.consumer, until)
	require.NoError(t, err)

	e.restartNATS(t)
	e.publishWork(t, 1, 3)
	require.Eventually(t, func() bool {
		c, err := e.js.Consumer(ctx, e.stream, e.consumer)
		return err == nil && c.CachedInfo().Paused
	}, 20*time.Second, 10*time.Millisecond, "the lane's consumer was not recreated paused")
	c, err := e.js.Consumer(ctx, e.stream, e.consumer)
	require.NoError(t, err)
	require.WithinDuration(t, until, *c.CachedInfo().Config.PauseUntil, time.Millisecond)
	require.Equal(t, 1, e.count(), "handled while paused")

	_, err = e.js.ResumeConsumer(ctx, e.stream, e.consumer)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.count() == 3 }, 10*time.Second, 10*time.Millisecond)
}

// The message in hand when NATS restarts comes back from the recreated
// in-memory consumer as its first delivery: the server forgot it had
// delivered it. The lane still counts it as delivered before, so that the
// dispatcher looks an uncertain create up instead of sending it blind, the
// audit counts a possible duplicate and a stale parked copy is looked for.
func TestAMessageInHandAcrossANATSRestartCountsAsDeliveredBefore(t *testing.T) {
	ctx := context.Background()
	e := newRestartEnv(t)
	inHand, release := make(chan struct{}), make(chan struct{})
	type seen struct {
		numDelivered uint64
		redelivered  bool
	}
	deliveries := make(chan seen, 10)
	g, err := lane.NewGroup(e.js, lane.Config{Stage: topology.StageDispatcher, Names: e.names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			deliveries <- seen{m.NumDelivered, m.Redelivered()}
			if len(deliveries) == 1 && m.NumDelivered == 1 && m.Failures == 0 {
				close(inHand)
				<-release
				return lane.Retry(200*time.Millisecond, errors.New("the CRM's answer was lost")) // a nak, not a retry in hand
			}
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	defer g.Stop(ctx)
	e.publishWork(t, 0, 1)
	<-inHand
	e.restartNATS(t)
	close(release)

	first := <-deliveries
	require.Equal(t, seen{1, false}, first)
	select {
	case again := <-deliveries:
		require.GreaterOrEqual(t, again.numDelivered, uint64(2), "the delivery before the restart is forgotten")
		require.True(t, again.redelivered)
	case <-time.After(20 * time.Second):
		t.Fatal("the message did not come back after the restart")
	}
}

// A lane that finds its consumer recreated by someone else (the watchdog,
// after a NATS restart) since it applied messages counts the first message
// as delivered before too: it cannot know what the lost incarnation did.
func TestAConsumerRecreatedByAnotherCountsItsFirstMessageAsDeliveredBefore(t *testing.T) {
	ctx := context.Background()
	e := newRestartEnv(t)
	g := e.start(t)
	e.publishWork(t, 0, 1)
	require.Eventually(t, func() bool { return e.count() == 1 }, 10*time.Second, 10*time.Millisecond)
	g.Stop(ctx) // writes the lane's fence

	e.restartNATS(t)
	_, filter := e.names.StageFilter(topology.StageDispatcher, 0)
	_, err := e.js.CreateConsumer(ctx, e.stream, e.names.LaneConsumerConfig(topology.StageDispatcher, 0, filter))
	require.NoError(t, err)
	e.publishWork(t, 1, 3)
	delivered := make(chan uint64, 2)
	g2, err := lane.NewGroup(e.js, lane.Config{Stage: topology.StageDispatcher, Names: e.names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			delivered <- m.NumDelivered
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g2.Start(ctx))
	defer g2.Stop(ctx)
	for i, want := range []uint64{2, 1} { // the first counts as delivered before; the next is itself
		select {
		case got := <-delivered:
			require.Equal(t, want, got, "delivery %d", i)
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d did not come", i)
		}
	}
}

// restartEnv is one dispatcher lane on a NATS server the test restarts on
// the same store.
type restartEnv struct {
	dir              string
	port             int
	srv              *server.Server
	js               jetstream.JetStream
	names            topology.Names
	stream, consumer string

	mu  sync.Mutex
	got []string
}

func newRestartEnv(t *testing.T) *restartEnv {
	e := &restartEnv{dir: t.TempDir()}
	e.srv = meshtest.RunServer(t, e.dir)
	e.port = e.srv.Addr().(*net.TCPAddr).Port
	_, e.js = meshtest.Connect(t, e.srv.ClientURL())
	e.names = topology.New(meshtest.Topology(1))
	require.NoError(t, e.names.Ensure(context.Background(), e.js))
	e.stream, _ = e.names.StageFilter(topology.StageDispatcher, 0)
	e.consumer = e.names.ConsumerName(topology.StageDispatcher, 0)
	return e
}

func (e *restartEnv) start(t *testing.T) *lane.Group {
	g, err := lane.NewGroup(e.js, lane.Config{Stage: topology.StageDispatcher, Names: e.names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			e.mu.Lock()
			e.got = append(e.got, string(m.Data))
			e.mu.Unlock()
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	return g
}

func (e *restartEnv) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

func (e *restartEnv) publishWork(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		m := nats.NewMsg(e.names.DispatchSubject(0, "t", "k"))
		m.Data = []byte(fmt.Sprintf("k-%d", i))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("k-%d", i))
		_, err := e.js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
}

// restartNATS restarts the server on the same port and store and waits
// until the client is back.
func (e *restartEnv) restartNATS(t *testing.T) {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = meshtest.RunServerOn(t, e.dir, e.port)
	require.Eventually(t, func() bool {
		_, err := e.js.Stream(context.Background(), e.stream)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
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
