package metrics_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/topology"
)

// sluice_lane_pinned shows which lanes have a replica pinned: a lane is
// pinned once a replica pulled a message from it.
func TestLanePinnedGauge(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(2))
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	m := metrics.New()
	require.NoError(t, m.Register(metrics.NewLanes(js, names, []topology.Stage{topology.StageEnricher}, time.Second)))

	// One event, on one partition.
	key := "k"
	p := names.PartitionOf(key)
	msg := nats.NewMsg(names.EventSubject("order", key))
	msg.Data = []byte(`{}`)
	_, err := js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	done := make(chan struct{})
	var once sync.Once
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: func(context.Context, *lane.Msg) lane.Outcome { once.Do(func() { close(done) }); return lane.Done() }})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	<-done

	gauge := func(part int) string {
		return `sluice_lane_pinned{partition="` + string(rune('0'+part)) + `",stage="enricher"} `
	}
	// Eventually runs the condition in a goroutine of its own: it reports,
	// the test goroutine asserts.
	var out string
	require.Eventually(t, func() bool {
		out = scrapeText(m)
		return strings.Contains(out, gauge(p)+"1") && strings.Contains(out, gauge(1-p)+"0")
	}, 5*time.Second, 20*time.Millisecond, "%s", out)
}
