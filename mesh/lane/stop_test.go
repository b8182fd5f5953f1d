package lane_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// A clean stop settles the message in hand and hands back anything
// buffered at once, so the next process continues without waiting for
// AckWait (5s here), in order and without repeats.
func TestStopHandsOverWithoutWaitingForAckWait(t *testing.T) {
	names, js := setup(t, 1)
	publish(t, js, names, "t1", "k", 60)
	var mu sync.Mutex
	var got []string
	stopAt := make(chan struct{})
	var once sync.Once
	handler := func(ctx context.Context, m *lane.Msg) lane.Outcome {
		mu.Lock()
		got = append(got, string(m.Data))
		n := len(got)
		mu.Unlock()
		if n == 20 {
			once.Do(func() { close(stopAt) })
		}
		return lane.Done()
	}
	g1, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(), Handler: handler})
	require.NoError(t, err)
	require.NoError(t, g1.Start(context.Background()))
	<-stopAt
	require.NoError(t, g1.Stop(context.Background()))

	g2, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(), Handler: handler})
	require.NoError(t, err)
	require.NoError(t, g2.Start(context.Background()))
	defer g2.Stop(context.Background())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 60
	}, 3*time.Second, 10*time.Millisecond, "the second group waited for AckWait: a buffered message was not handed back")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 60)
	for i, b := range got {
		require.Equal(t, fmt.Sprintf("k-%d", i), b)
	}
}

// Restart drops the consume loop and opens a new one; the lane keeps going
// in order.
func TestRestartKeepsOrder(t *testing.T) {
	names, js := setup(t, 1)
	publish(t, js, names, "t1", "k", 40)
	var mu sync.Mutex
	var got []string
	var g *lane.Group
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			got = append(got, string(m.Data))
			n := len(got)
			mu.Unlock()
			if n == 10 || n == 25 {
				go func() { _ = g.Restart(0) }()
			}
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 40
	}, 4*time.Second, 10*time.Millisecond)
	for i, b := range got {
		require.Equal(t, fmt.Sprintf("k-%d", i), b)
	}
	require.GreaterOrEqual(t, g.Stats()[0].Restarts, uint64(2))
	require.Error(t, g.Restart(5))
}

// A panicking handler holds the lane (retry) instead of crashing or
// skipping.
func TestPanicBecomesRetry(t *testing.T) {
	names, js := setup(t, 1)
	publish(t, js, names, "t1", "k", 2)
	var mu sync.Mutex
	var got []string
	panicked := false
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
			mu.Lock()
			defer mu.Unlock()
			if !panicked {
				panicked = true
				panic("boom")
			}
			got = append(got, string(m.Data))
			return lane.Done()
		}})
	require.NoError(t, err)
	// The runner retries a panic after 5s; keep the test short by checking
	// the stats and the head staying first.
	require.NoError(t, g.Start(context.Background()))
	defer g.Stop(context.Background())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"k-0", "k-1"}, got)
	require.Equal(t, uint64(1), g.Stats()[0].Retries)
	require.Contains(t, g.Stats()[0].LastError, "boom")
}
