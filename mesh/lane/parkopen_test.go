package lane_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// ParkOpen parks the message alone: its key's later messages reach the
// handler in order, nothing is parked behind it and the key is not
// recorded as parked.
func TestParkOpenLeavesTheKeyOpen(t *testing.T) {
	f := newIsoFixture(t)
	f.mu.Lock()
	f.open = true
	f.mu.Unlock()
	f.setReject("k-1", true)
	f.publish("k", 0, 4)
	f.waitSeen("k", "k-0", "k-2", "k-3")
	require.Eventually(t, func() bool { return len(f.parkedBodies("k")) == 1 }, 10*time.Second, 10*time.Millisecond)
	msgs, err := f.admin.Messages(context.Background(), topology.StageEnricher, "k")
	require.NoError(t, err)
	require.Equal(t, "k-1", string(msgs[0].Data))
	require.Equal(t, "crm rejected", msgs[0].Header.Get(lane.HeaderParkReason))
	keys, err := f.admin.List(context.Background())
	require.NoError(t, err)
	require.Empty(t, keys)
}
