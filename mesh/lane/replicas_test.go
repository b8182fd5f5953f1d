package lane_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
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

// handling is one handler call, as the replicas' recording handler saw it.
type handling struct {
	replica   string
	partition int
	seq       uint64
	body      string
	delivered uint64
}

// recorder records every handler call of every replica, in call order.
type recorder struct {
	mu  sync.Mutex
	log []handling
}

func (r *recorder) handler(replica string, each func(m *lane.Msg)) lane.Handler {
	return func(ctx context.Context, m *lane.Msg) lane.Outcome {
		if each != nil {
			each(m)
		}
		r.mu.Lock()
		r.log = append(r.log, handling{replica: replica, partition: m.Partition, seq: m.StreamSeq, body: string(m.Data), delivered: m.NumDelivered})
		r.mu.Unlock()
		return lane.Done()
	}
}

func (r *recorder) snapshot() []handling {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]handling(nil), r.log...)
}

// replicaTopology is a topology with a short AckWait and PinnedTTL so that
// failover takes seconds.
func replicaTopology(partitions int, pinnedTTL time.Duration) topology.Names {
	c := meshtest.Topology(partitions)
	c.AckWait = 2 * time.Second
	c.PinnedTTL = pinnedTTL
	return topology.New(c)
}

func startReplica(t *testing.T, js jetstream.JetStream, names topology.Names, h lane.Handler) *lane.Group {
	t.Helper()
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(), Handler: h})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	return g
}

// publishKeys publishes events from..to-1 of each key, round robin over
// the keys; event i of key k has body "k-i".
func publishKeys(t *testing.T, js jetstream.JetStream, names topology.Names, keys []string, from, to int) {
	t.Helper()
	require.NoError(t, tryPublishKeys(js, names, keys, from, to))
}

func tryPublishKeys(js jetstream.JetStream, names topology.Names, keys []string, from, to int) error {
	for i := from; i < to; i++ {
		for _, k := range keys {
			m := nats.NewMsg(names.EventSubject("t1", k))
			m.Data = []byte(fmt.Sprintf("%s-%d", k, i))
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%d", k, i))
			if _, err := js.PublishMsg(context.Background(), m); err != nil {
				return err
			}
		}
	}
	return nil
}

// Two replicas of a stage share the lanes: each partition is worked by one
// of them; when one dies the other takes its partitions over after about
// PinnedTTL (AckWait for the message in flight), in order, losing nothing.
func TestReplicasOneWorkerPerPartitionAndFailover(t *testing.T) {
	const partitions, perKey = 4, 12
	s := meshtest.RunServer(t, "")
	conns := map[string]*nats.Conn{}
	groups := map[string]*lane.Group{}
	names := replicaTopology(partitions, 3*time.Second)
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer:%d", i)
	}
	total := len(keys) * perKey
	var rec recorder
	slow := func(*lane.Msg) { time.Sleep(2 * time.Millisecond) }
	_, js := meshtest.Connect(t, s.ClientURL()) // admin and producer
	require.NoError(t, names.Ensure(context.Background(), js))
	for _, r := range []string{"A", "B"} {
		nc, rjs := meshtest.Connect(t, s.ClientURL())
		conns[r] = nc
		groups[r] = startReplica(t, rjs, names, rec.handler(r, slow))
	}
	// Both replicas pull on every lane before the first message.
	require.Eventually(t, func() bool {
		for p := 0; p < partitions; p++ {
			c, err := js.Consumer(context.Background(), names.EventsStream(), names.ConsumerName(topology.StageEnricher, p))
			if err != nil || c.CachedInfo().NumWaiting < 2 {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond)

	// Phase 1: both replicas run.
	publishKeys(t, js, names, keys, 0, perKey/2)
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= total/2 }, 30*time.Second, 20*time.Millisecond)
	owner := map[int]string{}
	owned := map[string]int{}
	for _, h := range rec.snapshot() {
		if o, ok := owner[h.partition]; ok {
			require.Equal(t, o, h.replica, "partition %d handled by both replicas while both ran", h.partition)
			continue
		}
		owner[h.partition] = h.replica
		owned[h.replica]++
	}
	require.Len(t, owner, partitions)
	victim, survivor := "A", "B"
	if owned["B"] > owned["A"] {
		victim, survivor = "B", "A"
	}
	t.Logf("partition owners while both ran: %v; killing %s", owner, victim)
	defer func() { _ = groups[survivor].Stop(context.Background()) }()

	// Phase 2: the victim dies mid-stream (its connection drops, nothing is
	// acked or handed back); the survivor takes everything over.
	published := make(chan error, 1)
	go func() { published <- tryPublishKeys(js, names, keys, perKey/2, perKey) }()
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= total/2+total/8 }, 30*time.Second, 5*time.Millisecond)
	killed := time.Now()
	conns[victim].Close()
	cut := len(rec.snapshot())
	require.Eventually(t, func() bool {
		seen := map[uint64]bool{}
		for _, h := range rec.snapshot() {
			seen[h.seq] = true
		}
		return len(seen) == total
	}, 40*time.Second, 20*time.Millisecond, "not every message was handled after the failover")
	require.NoError(t, <-published)
	hard, cancel := context.WithCancel(context.Background())
	cancel()
	_ = groups[victim].Stop(hard)

	log := rec.snapshot()
	var tookOver time.Duration
	for _, h := range log[cut:] {
		if owner[h.partition] == victim && h.replica == survivor {
			tookOver = time.Since(killed) // an upper bound: logged, not asserted
			break
		}
	}
	t.Logf("%s owned %d of %d partitions; %s handled one of them within %s (PinnedTTL 3s, AckWait 2s)",
		victim, owned[victim], partitions, survivor, tookOver)

	// Per partition: the first handling of each sequence comes in sequence
	// order (so per-key order holds), and only a message the victim held
	// when it died is handled twice.
	first := map[uint64]bool{}
	last := map[int]uint64{}
	dups := map[int]int{}
	byKey := map[string][]string{}
	for i, h := range log {
		if first[h.seq] {
			require.GreaterOrEqual(t, i, cut-1, "seq %d handled twice before the failover", h.seq)
			dups[h.partition]++
			continue
		}
		first[h.seq] = true
		require.Greater(t, h.seq, last[h.partition], "partition %d out of order", h.partition)
		last[h.partition] = h.seq
		k := h.body[:strings.LastIndex(h.body, "-")]
		byKey[k] = append(byKey[k], h.body)
	}
	for p, n := range dups {
		require.LessOrEqual(t, n, 1, "partition %d: more than the message in flight handled twice", p)
		require.Equal(t, victim, owner[p], "partition %d had a duplicate but was not the victim's", p)
	}
	require.Len(t, byKey, len(keys))
	for k, bodies := range byKey {
		for i, b := range bodies {
			require.Equal(t, fmt.Sprintf("%s-%d", k, i), b)
		}
	}
	var parts []int
	for p := range dups {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	t.Logf("duplicates around the failover on partitions %v", parts)
}

// A replica that loses its lane while its handler holds a message (cut off
// from the server longer than AckWait and PinnedTTL) must notice, when it
// comes back, that the other replica already applied the message, and skip
// its side effect.
func TestLateDuplicateIsFenced(t *testing.T) {
	s := meshtest.RunServer(t, "")
	proxy := meshtest.NewTCPProxy(t, s.Addr().String())
	ncA, jsA := meshtest.Connect(t, "nats://"+proxy.Addr())
	_, jsB := meshtest.Connect(t, s.ClientURL())
	names := replicaTopology(1, 3*time.Second)
	require.NoError(t, names.Ensure(context.Background(), jsB))

	var mu sync.Mutex
	var effects []string // the side effects, in the order they happened
	holding := make(chan struct{})
	release := make(chan struct{})
	verdict := make(chan bool, 1)
	effect := func(replica string) lane.Handler {
		return func(ctx context.Context, m *lane.Msg) lane.Outcome {
			if replica == "A" && string(m.Data) == "k-0" {
				close(holding)
				<-release
			}
			// The side-effect point: ask the fence right before it.
			fenced, err := m.Fenced(ctx)
			if err != nil {
				return lane.Retry(100*time.Millisecond, err)
			}
			if replica == "A" {
				verdict <- fenced
			}
			if fenced {
				return lane.Done()
			}
			mu.Lock()
			effects = append(effects, replica+":"+string(m.Data))
			mu.Unlock()
			return lane.Done()
		}
	}
	publish(t, jsB, names, "t1", "k", 1)
	gA := startReplica(t, jsA, names, effect("A"))
	<-holding // A is pinned and holds k-0
	gB := startReplica(t, jsB, names, effect("B"))
	defer func() { _ = gB.Stop(context.Background()) }()

	proxy.Down() // A can neither pull nor send InProgress
	publishKeys(t, jsB, names, []string{"k"}, 1, 5)
	want := []string{"B:k-0", "B:k-1", "B:k-2", "B:k-3", "B:k-4"}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(effects) == len(want)
	}, 20*time.Second, 20*time.Millisecond, "B did not take the lane over")
	mu.Lock()
	require.Equal(t, want, effects)
	mu.Unlock()
	st := gB.Stats()[0]
	require.Equal(t, uint64(5), st.LastSeq)
	require.Eventually(t, func() bool { return gB.Stats()[0].Fence == 5 }, 5*time.Second, 10*time.Millisecond)

	reconnects := ncA.Stats().Reconnects
	proxy.Up()
	require.Eventually(t, func() bool { return ncA.IsConnected() && ncA.Stats().Reconnects > reconnects },
		10*time.Second, 10*time.Millisecond)
	close(release) // A's handler goes on to its side effect
	select {
	case fenced := <-verdict:
		require.True(t, fenced, "A's stale handler was not told that B already applied k-0")
	case <-time.After(10 * time.Second):
		t.Fatal("A's handler did not reach its side effect")
	}
	require.Eventually(t, func() bool { return gA.Stats()[0].Fenced == 1 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, gA.Stop(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, want, effects, "A applied its stale copy")
}
