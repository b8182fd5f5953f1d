package loadgen_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/e2e/loadgen"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func TestScratchJS(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	ctx := context.Background()
	for _, c := range []int{16, 32, 64, 128} {
		p := plan(t, loadgen.PlanConfig{Events: 30000, Seed: int64(c), Keys: 2000, CustomerIDs: loadgen.Range{1, 5000}, CarIDs: loadgen.Range{1, 1000}})
		names := topology.New(meshtest.Topology(16))
		require.NoError(t, names.Ensure(ctx, js))
		res, err := loadgen.PublishJetStream(ctx, js, names, p.Events, loadgen.PublishOptions{Concurrency: c})
		require.NoError(t, err)
		t.Logf("c=%d %.0f/s", c, res.PerSecond())
	}
}
