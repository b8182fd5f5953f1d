package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// On an R3 cluster a fresh ordered consumer sometimes answered "no
// responders" or nothing for a moment, and replay stopped after a few
// events. It must replay the whole window.
func TestReplayOnAClusterReplaysTheWholeWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cl := meshtest.RunCluster(t, 3)
	_, js := meshtest.Connect(t, cl.URLs())
	cfg := meshtest.Topology(4)
	cfg.Replicas = 3
	names := topology.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, names.Ensure(ctx, js))
	since := time.Now().Add(-time.Minute)
	const n = 200
	for i := range n {
		m := nats.NewMsg(names.EventSubject("order", fmt.Sprintf("k%d", i%20)))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("ev-%d", i))
		m.Data = []byte(`{}`)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	for round := range 3 {
		res, err := Replay(ctx, js, names, ReplayOptions{Since: since, Reason: "cluster test", By: "test", DryRun: true})
		require.NoError(t, err, "round %d", round)
		require.Equal(t, n, res.Count, "round %d: every stored event of the window", round)
	}
}
