// Package metrics holds Sluice's Prometheus registry: one per process, so
// that `sluice run --target all` serves every service on one /metrics
// endpoint. Lanes report through lane.Config.Observe (Metrics.Observe);
// services' own counters are read at scrape time by Func collectors, and
// the lanes' lag and pause state by a Lanes collector that asks JetStream.
// Every metric name starts with "sluice_"; docs/metrics.md lists them.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sluice.dev/mesh/lane"
)

// Metrics is a process's registry with the lane metrics registered. A nil
// *Metrics is valid and records nothing.
type Metrics struct {
	reg          *prometheus.Registry
	outcomes     *prometheus.CounterVec
	handler      *prometheus.HistogramVec
	produceToCRM prometheus.Histogram
}

// New returns a registry with the Go runtime and process collectors and the
// lane metrics.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_lane_messages_total",
			Help: "Lane messages settled, by stage and outcome kind (done, forward, retry, pause, park).",
		}, []string{"stage", "kind"}),
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_lane_handler_seconds",
			Help:    "Time a lane spent on one message (handler and settling), by stage.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"stage"}),
		produceToCRM: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_produce_to_crm_seconds",
			Help:    "Time from the events stream storing an event to the CRM answering 2xx for it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.outcomes, m.handler, m.produceToCRM)
	return m
}

// Registry is the underlying registry (nil for a nil Metrics).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Register adds collectors; the first error (a duplicate metric) is
// returned.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	if m == nil {
		return nil
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Observe records one settled lane message. It is the lane.Config.Observe
// hook.
func (m *Metrics) Observe(o lane.Observation) {
	if m == nil {
		return
	}
	stage := string(o.Stage)
	m.outcomes.WithLabelValues(stage, o.Kind.String()).Inc()
	m.handler.WithLabelValues(stage).Observe(o.Duration.Seconds())
}

// ObserveFunc returns Observe as a lane.Config.Observe hook, or nil for a
// nil Metrics (so lanes skip the call).
func (m *Metrics) ObserveFunc() func(lane.Observation) {
	if m == nil {
		return nil
	}
	return m.Observe
}

// ObserveProduceToCRM records one delivery's produce→CRM latency (the
// dispatcher calls it through dispatcher.Deps.OnDelivered).
func (m *Metrics) ObserveProduceToCRM(d time.Duration) {
	if m == nil {
		return
	}
	m.produceToCRM.Observe(d.Seconds())
}

// Handler serves the registry in the Prometheus text format. A nil Metrics
// answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
