package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/dispatcher"
	"sluice.dev/enricher"
	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/mesh/metrics"
	"sluice.dev/mesh/topology"
)

// lagTimeout bounds the consumer info requests of one scrape.
const lagTimeout = 2 * time.Second

// running are the services of this process whose counters /metrics reads.
// Nil fields are services this target does not run.
type running struct {
	ingest     *ingest.Service
	enricher   *enricher.Service
	dispatcher *dispatcher.Service
	inbound    *inbound.Service
}

// stages lists the lane stages this process runs.
func (r running) stages() []topology.Stage {
	var out []topology.Stage
	if r.enricher != nil {
		out = append(out, topology.StageEnricher)
	}
	if r.dispatcher != nil {
		out = append(out, topology.StageDispatcher)
	}
	if r.inbound != nil {
		out = append(out, topology.StageInbound)
	}
	return out
}

// serviceCollectors returns the scrape-time collectors of the services'
// own counters; docs/metrics.md lists them.
func serviceCollectors(r running) []prometheus.Collector {
	var cs []prometheus.Collector
	counter := func(name, help string, labels []string, read func() []metrics.Sample) {
		cs = append(cs, metrics.NewFunc(name, help, prometheus.CounterValue, labels, read))
	}
	s := func(v uint64, labels ...string) metrics.Sample {
		return metrics.Sample{Labels: labels, Value: float64(v)}
	}
	if in := r.ingest; in != nil {
		counter("sluice_ingest_events_total", "Events ingest handled, by result (accepted, duplicate, rejected).",
			[]string{"result"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Accepted, "accepted"), s(st.Duplicates, "duplicate"), s(st.Rejected, "rejected")}
			})
		counter("sluice_ingest_requests_refused_total", "Ingest requests refused before their events were counted (unauthorized: 401; rejected: 413/415; unavailable: 503).",
			[]string{"reason"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Unauthorized, "unauthorized"), s(st.RejectedRequests, "rejected"), s(st.Unavailable, "unavailable")}
			})
	}
	if e := r.enricher; e != nil {
		counter("sluice_enricher_lookup_cache_total", "Enricher lookups by cache result (hit, miss: a database query).",
			[]string{"result"}, func() []metrics.Sample {
				c := e.Stats().Cache
				return []metrics.Sample{s(c.Hits, "hit"), s(c.Misses, "miss")}
			})
	}
	if d := r.dispatcher; d != nil {
		counter("sluice_crm_responses_total", "CRM answers by status code, plus \"timeout\" and \"error\" for requests without an answer.",
			[]string{"code"}, func() []metrics.Sample {
				var out []metrics.Sample
				for code, n := range d.Stats().CRMStatuses {
					out = append(out, s(n, code))
				}
				return out
			})
		counter("sluice_dispatcher_delivered_total", "Requests the CRM accepted (2xx).", nil,
			func() []metrics.Sample { return []metrics.Sample{s(d.Delivered())} })
	}
	if in := r.inbound; in != nil {
		counter("sluice_inbound_webhooks_total", "Webhook items received and stored, or refused, by result.",
			[]string{"result"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Received, "received"), s(st.Duplicates, "duplicate"),
					s(st.Unreadable, "unreadable"), s(st.Unauthorized, "unauthorized"), s(st.BadRequest, "bad_request"),
					s(st.TooLarge, "too_large"), s(st.Unavailable, "unavailable")}
			})
		counter("sluice_inbound_items_total", "Webhook items the writer settled, by result.",
			[]string{"result"}, func() []metrics.Sample {
				st := in.Stats()
				return []metrics.Sample{s(st.Applied, "applied"), s(st.Stale, "skipped_stale"),
					s(st.Echo, "skipped_echo"), s(st.Unchanged, "skipped_unchanged"),
					s(st.Parked, "parked"), s(st.DBErrors, "db_error")}
			})
	}
	return cs
}
