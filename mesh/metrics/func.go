package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sample is one value of a Func collector; Labels are the label values in
// the order of the collector's label names.
type Sample struct {
	Labels []string
	Value  float64
}

// Func is a collector whose samples are read at scrape time, for counters
// a service already keeps (its Stats()).
type Func struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	read func() []Sample
}

// NewFunc returns a collector of one metric family; read is called on each
// scrape.
func NewFunc(name, help string, typ prometheus.ValueType, labels []string, read func() []Sample) *Func {
	return &Func{desc: prometheus.NewDesc(name, help, labels, nil), typ: typ, read: read}
}

// Describe implements prometheus.Collector.
func (f *Func) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *Func) Collect(ch chan<- prometheus.Metric) {
	for _, s := range f.read() {
		m, err := prometheus.NewConstMetric(f.desc, f.typ, s.Value, s.Labels...)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(f.desc, err)
			continue
		}
		ch <- m
	}
}
