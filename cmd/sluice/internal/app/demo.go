package app

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"sluice.dev/e2e/loadgen"
	"sluice.dev/mesh/topology"
)

// demo is the demo producer of `make run`: rounds of sample-marketplace
// events at demo.rate, sent through ingest's HTTP API when it runs in this
// process (else published to JetStream). Ids are "d<start>:<key>#<n>", n
// counting per key across rounds, so the simulator can check per-key order.
type demo struct {
	cfg     DemoConfig
	js      jetstream.JetStream
	names   topology.Names
	httpURL func() string
	log     zerolog.Logger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newDemo(cfg DemoConfig, js jetstream.JetStream, names topology.Names, httpURL func() string, log zerolog.Logger) *demo {
	return &demo{cfg: cfg, js: js, names: names, httpURL: httpURL, log: log}
}

func (d *demo) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.loop(ctx)
	}()
	return nil
}

// Stop ends the current publish; events already acked are in the stream.
func (d *demo) Stop(ctx context.Context) error {
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *demo) loop(ctx context.Context) {
	run := fmt.Sprintf("d%d", time.Now().Unix())
	counters := map[string]int{}
	var total int
	for round := int64(1); ctx.Err() == nil; round++ {
		keys := min(d.cfg.Keys, 90)
		plan, err := loadgen.NewPlan(loadgen.PlanConfig{Events: 500, Keys: keys, Seed: round, Start: time.Now().UTC(), Spacing: time.Millisecond})
		if err != nil {
			d.log.Error().Err(err).Msg("demo plan")
			return
		}
		for _, ev := range plan.Events {
			counters[ev.Key]++
			ev.ID = fmt.Sprintf("%s:%s#%d", run, strings.ReplaceAll(ev.Key, " ", "_"), counters[ev.Key])
			ev.Source = "demo"
		}
		opts := loadgen.PublishOptions{Rate: d.cfg.Rate}
		var res loadgen.Result
		if u := d.httpURL(); u != "" {
			res, err = loadgen.PublishHTTP(ctx, u, plan.Events, opts)
		} else {
			res, err = loadgen.PublishJetStream(ctx, d.js, d.names, plan.Events, opts)
		}
		total += res.Published
		if err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Int("published", res.Published).Msg("demo round incomplete; next round in 2s")
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
	d.log.Info().Int("published", total).Msg("demo producer stopped")
}
