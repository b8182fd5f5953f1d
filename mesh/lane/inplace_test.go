package lane_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// TestShortRetryKeepsTheMessageInHand: a retry of at most 100ms is waited
// out by the runner with the message in hand (the handler sees it again
// with Failures and InHand counted, NumDelivered still 1: no nak, no
// redelivery; the ledger's duplicate audit needs InHand),
// while a longer one is naked and redelivered by the server. Order holds
// either way.
func TestShortRetryKeepsTheMessageInHand(t *testing.T) {
	for _, tc := range []struct {
		name          string
		delay         time.Duration
		wantDelivered uint64 // NumDelivered of the third call
		wantInHand    int    // InHand of the third call
	}{
		{"5ms: in hand", 5 * time.Millisecond, 1, 2},
		{"150ms: naked", 150 * time.Millisecond, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, js := setup(t, 1)
			publish(t, js, names, "t1", "k", 3)
			type call struct {
				body      string
				failures  int
				delivered uint64
				inHand    int
			}
			var mu sync.Mutex
			var calls []call
			g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
				Handler: func(ctx context.Context, m *lane.Msg) lane.Outcome {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, call{string(m.Data), m.Failures, m.NumDelivered, m.InHand})
					if string(m.Data) == "k-0" && m.Failures < 2 {
						return lane.Retry(tc.delay, errors.New("flaky"))
					}
					return lane.Done()
				}})
			require.NoError(t, err)
			require.NoError(t, g.Start(context.Background()))
			defer g.Stop(context.Background())
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(calls) == 5
			}, 10*time.Second, 5*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, []call{
				{"k-0", 0, 1, 0}, {"k-0", 1, calls[1].delivered, calls[1].inHand}, {"k-0", 2, tc.wantDelivered, tc.wantInHand},
				{"k-1", 0, 1, 0}, {"k-2", 0, 1, 0},
			}, calls)
			require.Equal(t, uint64(2), g.Stats()[0].Retries)
		})
	}
}
