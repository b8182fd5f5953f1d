package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/mesh/topology"
)

// ConsumerReader is the part of jetstream.JetStream the Lanes collector uses.
type ConsumerReader interface {
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
}

// Lanes reports each lane's lag and pause state as JetStream sees it, read
// at scrape time (one consumer info request per lane, all bounded by
// Timeout). Lanes whose consumer does not exist are left out.
type Lanes struct {
	js      ConsumerReader
	names   topology.Names
	stages  []topology.Stage
	timeout time.Duration

	lag, ackPending, paused, pinned, pausedStage, up *prometheus.Desc
}

// NewLanes returns a collector for stages' lanes; timeout bounds a scrape's
// JetStream requests (default 2s).
func NewLanes(js ConsumerReader, names topology.Names, stages []topology.Stage, timeout time.Duration) *Lanes {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	l := []string{"stage", "partition"}
	return &Lanes{js: js, names: names, stages: stages, timeout: timeout,
		lag:        prometheus.NewDesc("sluice_lane_lag", "Messages not yet acked by the lane: pending plus ack pending.", l, nil),
		ackPending: prometheus.NewDesc("sluice_lane_ack_pending", "Messages delivered to the lane and not yet acked.", l, nil),
		paused:     prometheus.NewDesc("sluice_lane_paused", "1 while the lane's consumer is paused on the server.", l, nil),
		pinned: prometheus.NewDesc("sluice_lane_pinned", "1 while a service replica is pinned to the lane "+
			"(0: none pulls, or the pinned one died less than pinned_ttl ago and none took over yet).", l, nil),
		pausedStage: prometheus.NewDesc("sluice_lanes_paused", "Number of paused lanes, by stage.", []string{"stage"}, nil),
		up:          prometheus.NewDesc("sluice_lane_info_up", "1 if every lane's consumer info was read in this scrape.", []string{"stage"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Lanes) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.ackPending, c.paused, c.pinned, c.pausedStage, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Lanes) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, stage := range c.stages {
		stream, _ := c.names.StageFilter(stage, 0)
		if stream == "" {
			continue
		}
		s := string(stage)
		var nPaused float64
		up := 1.0
		for p := 0; p < c.names.Partitions(); p++ {
			cons, err := c.js.Consumer(ctx, stream, c.names.ConsumerName(stage, p))
			if err != nil {
				if ctx.Err() != nil || !isNotFound(err) {
					up = 0
				}
				continue
			}
			ci := cons.CachedInfo()
			part := strconv.Itoa(p)
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(ci.NumPending+uint64(ci.NumAckPending)), s, part)
			ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(ci.NumAckPending), s, part)
			v := 0.0
			if ci.Paused {
				v = 1
				nPaused++
			}
			ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, v, s, part)
			ch <- prometheus.MustNewConstMetric(c.pinned, prometheus.GaugeValue, pinnedValue(ci), s, part)
		}
		ch <- prometheus.MustNewConstMetric(c.pausedStage, prometheus.GaugeValue, nPaused, s)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, s)
	}
}

// pinnedValue is 1 when a client is pinned in the lane's priority group.
func pinnedValue(ci *jetstream.ConsumerInfo) float64 {
	for _, g := range ci.PriorityGroups {
		if g.Group == topology.LanePriorityGroup && g.PinnedClientID != "" {
			return 1
		}
	}
	return 0
}
