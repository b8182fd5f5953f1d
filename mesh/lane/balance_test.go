package lane_test

import (
	"context"
	"fmt"
	"strings"
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

func startBalanced(t *testing.T, js jetstream.JetStream, names topology.Names, h lane.Handler) *lane.Group {
	t.Helper()
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(), Handler: h, Balance: true})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	return g
}

// pulling is the number of g's lanes not on standby.
func pulling(g *lane.Group) int {
	n := 0
	for _, st := range g.Stats() {
		if !st.Standby {
			n++
		}
	}
	return n
}

// checkLog checks a replicas' handling log: every published event handled,
// each partition's first handlings in sequence order (so per-key order),
// each partition worked by one replica at a time (its replicas never come
// back: A..., B..., C...), and a sequence handled twice only when it was
// in the hands of the killed replica.
func checkLog(t *testing.T, log []handling, keys []string, perKey int, killed string) {
	t.Helper()
	first := map[uint64]string{}
	last := map[int]uint64{}
	byKey := map[string][]string{}
	workers := map[int][]string{}
	for _, h := range log {
		if by, ok := first[h.seq]; ok {
			require.Equal(t, killed, by, "seq %d handled twice, first by %s (not the killed replica)", h.seq, by)
			continue
		}
		first[h.seq] = h.replica
		require.Greater(t, h.seq, last[h.partition], "partition %d out of order", h.partition)
		last[h.partition] = h.seq
		w := workers[h.partition]
		if len(w) == 0 || w[len(w)-1] != h.replica {
			require.NotContains(t, w, h.replica, "partition %d went back to %s: worked by two replicas at once", h.partition, h.replica)
			workers[h.partition] = append(w, h.replica)
		}
		k := h.body[:strings.LastIndex(h.body, "-")]
		byKey[k] = append(byKey[k], h.body)
	}
	require.Len(t, first, len(keys)*perKey)
	for k, bodies := range byKey {
		for i, b := range bodies {
			require.Equal(t, fmt.Sprintf("%s-%d", k, i), b)
		}
	}
	t.Logf("workers per partition: %v", workers)
}

// owners counts, per replica, the partitions it handled in log[from:].
func owners(log []handling, from int) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for _, h := range log[from:] {
		if out[h.replica] == nil {
			out[h.replica] = map[int]bool{}
		}
		out[h.replica][h.partition] = true
	}
	return out
}

// With Balance, two replicas split the lanes; when one dies the other takes
// every lane; a third that joins gets its share. Nothing is lost or
// reordered throughout, and a partition is worked by one replica at a time.
func TestBalanceSpreadsLanesOverReplicas(t *testing.T) {
	const partitions, perKey = 8, 12
	s := meshtest.RunServer(t, "")
	names := replicaTopology(partitions, 3*time.Second)
	keys := make([]string, 48)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer:%d", i)
	}
	var rec recorder
	slow := func(*lane.Msg) { time.Sleep(2 * time.Millisecond) }
	_, js := meshtest.Connect(t, s.ClientURL())
	require.NoError(t, names.Ensure(context.Background(), js))
	conns := map[string]*nats.Conn{}
	groups := map[string]*lane.Group{}
	start := func(r string) {
		nc, rjs := meshtest.Connect(t, s.ClientURL())
		conns[r] = nc
		groups[r] = startBalanced(t, rjs, names, rec.handler(r, slow))
	}
	start("A")
	start("B")
	require.Eventually(t, func() bool { return pulling(groups["A"]) == 4 && pulling(groups["B"]) == 4 },
		15*time.Second, 20*time.Millisecond, "two replicas did not split 8 lanes 4/4")

	// Phase 1: A and B share the lanes.
	publishKeys(t, js, names, keys, 0, perKey/3)
	third := len(keys) * perKey / 3
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= third }, 30*time.Second, 20*time.Millisecond)
	own := owners(rec.snapshot(), 0)
	t.Logf("phase 1: A handled partitions %v, B %v", own["A"], own["B"])
	require.GreaterOrEqual(t, len(own["A"]), 2)
	require.GreaterOrEqual(t, len(own["B"]), 2)

	// Phase 2: A dies mid-stream; B takes every lane.
	published := make(chan error, 1)
	go func() { published <- tryPublishKeys(js, names, keys, perKey/3, 2*perKey/3) }()
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= third+third/4 }, 30*time.Second, 5*time.Millisecond)
	killed := time.Now()
	conns["A"].Close()
	require.NoError(t, <-published)
	require.Eventually(t, func() bool {
		return len(owners(rec.snapshot(), 0)["B"]) == partitions && pulling(groups["B"]) == partitions
	},
		40*time.Second, 20*time.Millisecond, "B did not take every lane over")
	require.Eventually(t, func() bool {
		seen := map[uint64]bool{}
		for _, h := range rec.snapshot() {
			seen[h.seq] = true
		}
		return len(seen) == 2*third
	}, 40*time.Second, 20*time.Millisecond, "not every message was handled after A died")
	t.Logf("phase 2: B works all %d lanes %s after A died", partitions, time.Since(killed).Round(time.Millisecond))
	hard, cancel := context.WithCancel(context.Background())
	cancel()
	_ = groups["A"].Stop(hard)

	// Phase 3: C joins while events flow; B hands it its share.
	mark := len(rec.snapshot())
	go func() { published <- tryPublishKeys(js, names, keys, 2*perKey/3, perKey) }()
	start("C")
	require.NoError(t, <-published)
	require.Eventually(t, func() bool { return pulling(groups["B"]) == 4 && pulling(groups["C"]) == 4 },
		15*time.Second, 20*time.Millisecond, "B and C did not split the lanes")
	require.Eventually(t, func() bool { return len(rec.snapshot()) >= mark+third }, 30*time.Second, 20*time.Millisecond)
	own = owners(rec.snapshot(), mark)
	t.Logf("phase 3: B handled partitions %v, C %v", own["B"], own["C"])
	require.GreaterOrEqual(t, len(own["C"]), 2)

	checkLog(t, rec.snapshot(), keys, perKey, "A")
	require.NoError(t, groups["C"].Stop(context.Background()))
	require.Eventually(t, func() bool { return pulling(groups["B"]) == partitions }, 10*time.Second, 20*time.Millisecond,
		"B did not take C's lanes back after C stopped")
	require.NoError(t, groups["B"].Stop(context.Background()))
}

// A member that heartbeats but pulls nothing (here a fake entry; in life a
// replica whose view disagrees) is assigned lanes; the live replica's
// standby lanes find their messages waiting with no pull and take them over.
func TestBalanceStandbyTakesOverOrphanedLane(t *testing.T) {
	const partitions, perKey = 4, 5
	s := meshtest.RunServer(t, "")
	names := replicaTopology(partitions, 3*time.Second)
	_, js := meshtest.Connect(t, s.ClientURL())
	require.NoError(t, names.Ensure(context.Background(), js))
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), names.MembersConfig())
	require.NoError(t, err)
	ghost := topology.MemberKey(topology.StageEnricher, "ghost")
	ctx, stopGhost := context.WithCancel(context.Background())
	defer stopGhost()
	beat := func() { _, _ = kv.Put(ctx, ghost, []byte(`{"host":"ghost"}`)) }
	beat()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(names.MemberHeartbeat()):
				beat()
			}
		}
	}()

	var rec recorder
	nc, rjs := meshtest.Connect(t, s.ClientURL())
	_ = nc
	g := startBalanced(t, rjs, names, rec.handler("B", nil))
	defer func() { _ = g.Stop(context.Background()) }()
	require.Eventually(t, func() bool { return pulling(g) == 2 }, 10*time.Second, 20*time.Millisecond,
		"the ghost member was not given half the lanes")

	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	publishKeys(t, js, names, keys, 0, perKey)
	require.Eventually(t, func() bool { return len(rec.snapshot()) == len(keys)*perKey }, 30*time.Second, 20*time.Millisecond,
		"the lanes assigned to the ghost were not taken over")
	var takeovers uint64
	for _, st := range g.Stats() {
		takeovers += st.Takeovers
	}
	require.GreaterOrEqual(t, takeovers, uint64(2))
	checkLog(t, rec.snapshot(), keys, perKey, "")
}
