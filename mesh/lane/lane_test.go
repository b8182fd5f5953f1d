package lane_test

import (
	"context"
	"errors"
	"fmt"
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

func setup(t *testing.T, partitions int) (topology.Names, jetstream.JetStream) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(partitions))
	require.NoError(t, names.Ensure(context.Background(), js))
	return names, js
}

func publish(t *testing.T, js jetstream.JetStream, names topology.Names, typ, key string, n int) {
	ctx := context.Background()
	for i := 0; i < n; i++ {
		m := nats.NewMsg(names.EventSubject(typ, key))
		m.Data = []byte(fmt.Sprintf("%s-%d", key, i))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%d", key, i))
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
}

func TestLanesKeepPerKeyOrderThroughRetries(t *testing.T) {
	names, js := setup(t, 4)
	keys := []string{"a", "b.c", "customer:1", "d e"}
	for _, k := range keys {
		publish(t, js, names, "t1", k, 30)
	}
	var mu sync.Mutex
	got := map[string][]string{}
	failed := map[string]bool{}
	var wrongPartition []string // checked in the test goroutine
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			defer mu.Unlock()
			body := string(m.Data)
			if !failed[body] && len(got[m.KeyToken])%7 == 3 {
				failed[body] = true
				return lane.Retry(10*time.Millisecond, errors.New("flaky"))
			}
			if want := names.PartitionOf(body[:len(body)-len(fmt.Sprint(len(got[m.KeyToken])))-1]); want != m.Partition {
				wrongPartition = append(wrongPartition, fmt.Sprintf("%s on partition %d, want %d", body, m.Partition, want))
			}
			got[m.KeyToken] = append(got[m.KeyToken], body)
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, v := range got {
			n += len(v)
		}
		return n == 120
	}, 20*time.Second, 20*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, wrongPartition)
	for _, k := range keys {
		tok := topology.KeyToken(k)
		for i, b := range got[tok] {
			require.Equal(t, fmt.Sprintf("%s-%d", k, i), b)
		}
	}
}

func TestPauseHoldsHeadAndParkMovesOn(t *testing.T) {
	names, js := setup(t, 1)
	publish(t, js, names, "t1", "k", 3)
	var mu sync.Mutex
	var seen []string
	paused := false
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, string(m.Data))
			if string(m.Data) == "k-0" && !paused {
				paused = true
				return lane.Pause(1500*time.Millisecond, errors.New("crm down"))
			}
			if string(m.Data) == "k-1" {
				return lane.Park("rejected", errors.New("422"), nats.Header{"Crm-Status": []string{"422"}})
			}
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	cons := names.ConsumerName(topology.StageEnricher, 0)
	require.Eventually(t, func() bool {
		ci, err := js.Consumer(context.Background(), names.EventsStream(), cons)
		return err == nil && ci.CachedInfo().Paused
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 4
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"k-0", "k-0", "k-1", "k-2"}, seen)
	ps, err := js.Stream(context.Background(), names.ParkedStream())
	require.NoError(t, err)
	pm, err := ps.GetLastMsgForSubject(context.Background(), names.ParkedSubject(topology.StageEnricher, "t1", "k"))
	require.NoError(t, err)
	require.Equal(t, "rejected", pm.Header.Get(lane.HeaderParkReason))
	require.Equal(t, "422", pm.Header.Get("Crm-Status"))
	require.Equal(t, "k-1", string(pm.Data))
}

// What must be stored before the ack (a handler's Outcome.Durable, the
// BeforeAck hook's wait for a park) holds the lane when it fails: the
// message is not acked but redelivered, and acked once the wait succeeds.
func TestAckWaitsForDurableAndBeforeAck(t *testing.T) {
	names, js := setup(t, 1)
	publish(t, js, names, "t1", "k", 2)
	var mu sync.Mutex
	var seen, waited []string
	fail := map[string]int{"k-0": 2, "k-1": 1} // failing waits per message
	wait := func(id string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			waited = append(waited, id)
			if fail[id] > 0 {
				fail[id]--
				return errors.New("no PubAck")
			}
			return nil
		}
	}
	var hooked []lane.Kind
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		PublishRetry: 10 * time.Millisecond,
		BeforeAck: func(o lane.Observation) func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			hooked = append(hooked, o.Kind)
			if o.Kind != lane.KindPark {
				return nil
			}
			return wait(string(o.Msg.Data))
		},
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, string(m.Data))
			if string(m.Data) == "k-0" {
				o := lane.Done()
				o.Durable = wait("k-0")
				return o
			}
			return lane.Park("rejected", errors.New("422"), nil)
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	require.Eventually(t, func() bool {
		return g.Stats()[0].Acked == 2
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"k-0", "k-0", "k-0", "k-1", "k-1"}, seen, "a failed wait redelivers the message")
	require.Equal(t, []string{"k-0", "k-0", "k-0", "k-1", "k-1"}, waited)
	require.Equal(t, []lane.Kind{lane.KindDone, lane.KindDone, lane.KindDone, lane.KindPark, lane.KindPark}, hooked)
}
