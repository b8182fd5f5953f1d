package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/ingest"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/topology"
)

// lagTimeout bounds the consumer info requests of one scrape.
const lagTimeout = 2 * time.Second

// running are the services of this process whose counters /metrics reads.
type running struct {
	// ingest is nil when this target does not run it.
	ingest *ingest.Service
	// stages are the lane stages this process runs, in pipeline order.
	stages []runningStage
	// st holds the inline outlet (dispatcher.inline), if any.
	st *stats
}

// runningStage is a lane stage this process runs.
type runningStage struct {
	stage topology.Stage
	get   func() laneService
	w     stageWiring
}

// stageNames lists the lane stages this process runs.
func (r running) stageNames() []topology.Stage {
	var out []topology.Stage
	for _, s := range r.stages {
		out = append(out, s.stage)
	}
	return out
}

// serviceCollectors returns the scrape-time collectors of the services'
// own counters; docs/metrics.md lists them.
func serviceCollectors(r running) []prometheus.Collector {
	var cs []prometheus.Collector
	add := func(name, help string, labels []string, read func() []metrics.Sample) {
		cs = append(cs, counter(name, help, labels, read))
	}
	s := sample
	if in := r.ingest; in != nil {
		add("sluice_ingest_events_total", "Events ingest handled, by result (accepted, duplicate, rejected).",
			[]string{"result"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Accepted, "accepted"), s(st.Duplicates, "duplicate"), s(st.Rejected, "rejected")}
			})
		add("sluice_ingest_requests_refused_total", "Ingest requests refused before their events were counted (unauthorized: 401; rejected: 413/415; unavailable: 503).",
			[]string{"reason"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Unauthorized, "unauthorized"), s(st.RejectedRequests, "rejected"), s(st.Unavailable, "unavailable")}
			})
	}
	for _, rs := range r.stages {
		if rs.w.collectors != nil {
			cs = append(cs, rs.w.collectors(rs.get, r.st)...)
		}
	}
	return cs
}
