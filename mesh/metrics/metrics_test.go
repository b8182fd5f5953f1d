package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/topology"
)

// scrapeText is the /metrics text ("" when the scrape failed); for
// conditions that run outside the test goroutine.
func scrapeText(m *metrics.Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		return ""
	}
	return rec.Body.String()
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(b)
}

func TestLaneActivityShowsInMetrics(t *testing.T) {
	s := meshtest.RunServer(t, "")
	_, js := meshtest.Connect(t, s.ClientURL())
	names := topology.New(meshtest.Topology(2))
	ctx := context.Background()
	require.NoError(t, names.Ensure(ctx, js))
	accepted := time.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339Nano)
	for i := 0; i < 6; i++ {
		m := nats.NewMsg(names.EventSubject("order", fmt.Sprintf("k%d", i)))
		m.Data = fmt.Appendf(nil, `{"n":%d,"accepted_at":%q}`, i, accepted)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}

	m := metrics.New()
	require.NoError(t, m.Register(metrics.NewLanes(js, names, []topology.Stage{topology.StageEnricher, topology.StageDispatcher}, time.Second)))
	var settled atomic.Int64
	var retried atomic.Bool
	h := func(_ context.Context, msg *lane.Msg) lane.Outcome {
		switch {
		case strings.Contains(string(msg.Data), `"n":1,`) && !retried.Swap(true):
			return lane.Retry(10*time.Millisecond, errors.New("flaky"))
		case strings.Contains(string(msg.Data), `"n":2,`):
			return lane.Park("bad", errors.New("bad"), nil)
		}
		// As the dispatcher does on a 2xx: record now − accepted_at.
		var r struct {
			AcceptedAt time.Time `json:"accepted_at"`
		}
		require.NoError(t, json.Unmarshal(msg.Data, &r))
		m.ObserveProduceToCRM(time.Since(r.AcceptedAt))
		return lane.Done()
	}
	g, err := lane.NewGroup(js, lane.Config{Stage: topology.StageEnricher, Names: names, Logger: zerolog.Nop(),
		Handler: h,
		Observe: func(o lane.Observation) { m.Observe(o); settled.Add(1) }})
	require.NoError(t, err)
	require.NoError(t, g.Start(ctx))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	require.Eventually(t, func() bool { return settled.Load() == 7 }, 10*time.Second, 10*time.Millisecond)

	_, err = js.PauseConsumer(ctx, names.EventsStream(), names.ConsumerName(topology.StageEnricher, 1), time.Now().Add(time.Hour))
	require.NoError(t, err)
	out := scrape(t, m)
	for _, want := range []string{
		`sluice_lane_messages_total{kind="done",stage="enricher"} 5`,
		`sluice_lane_messages_total{kind="retry",stage="enricher"} 1`,
		`sluice_lane_messages_total{kind="park",stage="enricher"} 1`,
		`sluice_lane_handler_seconds_count{stage="enricher"} 7`,
		`sluice_produce_to_crm_seconds_count 5`,
		`sluice_produce_to_crm_seconds_bucket{le="2.5"} 0`,
		`sluice_lane_lag{partition="0",stage="enricher"} 0`,
		`sluice_lane_paused{partition="1",stage="enricher"} 1`,
		`sluice_lane_paused{partition="0",stage="enricher"} 0`,
		`sluice_lanes_paused{stage="enricher"} 1`,
		`sluice_lane_info_up{stage="enricher"} 1`,
		`sluice_lanes_paused{stage="dispatcher"} 0`, // no consumers: not an error
		`sluice_lane_info_up{stage="dispatcher"} 1`,
		`go_goroutines`,
	} {
		require.Contains(t, out, want)
	}
}

func TestFuncCollector(t *testing.T) {
	good := metrics.New()
	var n atomic.Uint64
	require.NoError(t, good.Register(metrics.NewFunc("sluice_test_total", "test", prometheus.CounterValue, []string{"code"},
		func() []metrics.Sample { return []metrics.Sample{{Labels: []string{"200"}, Value: float64(n.Load())}} })))
	n.Store(42)
	require.Contains(t, scrape(t, good), `sluice_test_total{code="200"} 42`)

	m := metrics.New()
	require.NoError(t, m.Register(metrics.NewFunc("sluice_test_total", "test", prometheus.CounterValue, []string{"code"},
		func() []metrics.Sample {
			return []metrics.Sample{{Labels: []string{"200"}, Value: float64(n.Load())}, {Labels: []string{"bad", "extra"}}}
		})))
	n.Store(42)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	// The bad sample makes the scrape fail loudly rather than lie.
	require.Equal(t, 500, rec.Code)
	require.Contains(t, rec.Body.String(), "inconsistent label cardinality")
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *metrics.Metrics
	m.Observe(lane.Observation{Stage: topology.StageDispatcher})
	m.ObserveProduceToCRM(time.Second)
	require.Nil(t, m.ObserveFunc())
	require.NoError(t, m.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 404, rec.Code)
}
