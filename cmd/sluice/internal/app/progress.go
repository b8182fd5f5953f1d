package app

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/crmsim"
	"sluice.dev/dispatcher"
	"sluice.dev/inbound"
	"sluice.dev/ingest"
	"sluice.dev/mesh/topology"
)

// stats gathers what the progress line shows, from JetStream state (not
// from logs) plus the in-process services' counters.
type stats struct {
	js         jetstream.JetStream
	names      topology.Names
	target     string
	ingest     *ingest.Service
	dispatcher *dispatcher.Service
	// outlet is the enricher's inline outlet (dispatcher.inline).
	outlet  atomic.Pointer[dispatcher.Outlet]
	sim     *crmsim.Sim
	inbound *inbound.Service
}

// laneLag is one lane's backlog as the server sees it.
type laneLag struct {
	consumer string
	pending  uint64
	paused   bool
}

func (s *stats) lanes(ctx context.Context, stage topology.Stage) ([]laneLag, error) {
	stream, _ := s.names.StageFilter(stage, 0)
	var out []laneLag
	for p := 0; p < s.names.Partitions(); p++ {
		name := s.names.ConsumerName(stage, p)
		c, err := s.js.Consumer(ctx, stream, name)
		if err != nil {
			continue
		}
		ci := c.CachedInfo()
		out = append(out, laneLag{consumer: name, pending: ci.NumPending + uint64(ci.NumAckPending), paused: ci.Paused})
	}
	return out, nil
}

func (s *stats) report(ctx context.Context, every time.Duration, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastDelivered uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		line := s.line(qctx, &lastDelivered, time.Since(last))
		cancel()
		last = time.Now()
		log.Info().Msg(line)
	}
}

func (s *stats) line(ctx context.Context, lastDelivered *uint64, since time.Duration) string {
	var b strings.Builder
	if es, err := s.js.Stream(ctx, s.names.EventsStream()); err == nil {
		fmt.Fprintf(&b, "events stored %d", es.CachedInfo().State.Msgs)
	}
	if s.ingest != nil {
		fmt.Fprintf(&b, " | accepted via ingest %d", s.ingest.Accepted())
	}
	if out := s.outlet.Load(); s.dispatcher != nil || out != nil {
		d := delivered(s.dispatcher, out)
		rate := float64(d-*lastDelivered) / since.Seconds()
		*lastDelivered = d
		fmt.Fprintf(&b, " | delivered %d (%.0f/s)", d, rate)
	}
	if ps, err := s.js.Stream(ctx, s.names.ParkedStream()); err == nil {
		fmt.Fprintf(&b, " | parked %d", ps.CachedInfo().State.Msgs)
	}
	for _, spec := range topology.StageSpecs() {
		stage := spec.Name
		ls, _ := s.lanes(ctx, stage)
		if len(ls) == 0 && spec.Optional {
			continue
		}
		var total uint64
		var paused []string
		sort.Slice(ls, func(i, j int) bool { return ls[i].pending > ls[j].pending })
		for _, l := range ls {
			total += l.pending
			if l.paused {
				paused = append(paused, l.consumer)
			}
		}
		fmt.Fprintf(&b, " | %s lag %d", stage, total)
		if len(ls) > 0 && ls[0].pending > 0 {
			fmt.Fprintf(&b, " (max %s=%d)", ls[0].consumer, ls[0].pending)
		}
		if len(paused) > 0 {
			fmt.Fprintf(&b, " PAUSED: %s", strings.Join(paused, ","))
		}
	}
	if s.sim != nil {
		fmt.Fprintf(&b, " | crm-sim 2xx %d of %d requests", s.sim.Delivered(), s.sim.Attempts())
	}
	if s.inbound != nil {
		b.WriteString(" | " + webhookLine(s.inbound.Stats()))
	}
	return b.String()
}

// webhookLine is the progress line's webhook part. Its numbers add up:
// received = duplicates + applied + skipped + parked + waiting, where
// received counts every webhook item the receiver stored or found already
// stored (a CRM retry), skipped counts stale versions, echoes of our own
// changes, unchanged rows and items already applied before, and waiting is
// what the writer lanes have not settled yet (docs/runbook.md).
func webhookLine(is inbound.Stats) string {
	skipped := is.Stale + is.Echo + is.Unchanged + is.Redelivered
	settled := is.Duplicates + is.Applied + skipped + is.Parked
	var waiting uint64
	if is.Received > settled {
		waiting = is.Received - settled
	}
	return fmt.Sprintf("webhooks received %d = %d duplicates + %d applied + %d skipped + %d parked + %d waiting",
		is.Received, is.Duplicates, is.Applied, skipped, is.Parked, waiting)
}
