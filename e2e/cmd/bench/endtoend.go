package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/e2e/harness"
	"sluice.dev/enricher/productdb"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
	"sluice.dev/schemas"
)

type e2eResult struct {
	throughput  float64
	drain       float64
	p50, p99    time.Duration
	max         time.Duration
	latencyN    int
	latencyRate float64
	rssKB       int64
	// cpuPerEvent is the CPU time of the sluice process (and of the
	// simulator) per event over the sustained run and the drain.
	cpuPerEvent, simCPUPerEvent time.Duration
}

// runEndToEnd measures (b) against `sluice run` in its own process.
func runEndToEnd(ctx context.Context, o options, sim *simProc) (e2eResult, error) {
	var res e2eResult
	dataDir := filepath.Join(o.workDir, "sluice")
	if err := prepareDB(ctx, filepath.Join(dataDir, "product.db")); err != nil {
		return res, err
	}
	port, err := freePort()
	if err != nil {
		return res, err
	}
	cfg := filepath.Join(o.workDir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir: %s
log: {level: warn, format: json}
nats: {embedded: {listen: "127.0.0.1:%d"}}
topology: {partitions: %d}
ingest: {http_addr: ""}
dispatcher: {crm: {url: %q}}
demo: {enabled: "false"}
ops: {addr: "127.0.0.1:0"}
progress_interval: 1h
`, dataDir, port, o.partitions, sim.url)), 0o600); err != nil {
		return res, err
	}
	p, err := startProc(o.bin, []string{"run", "--config", cfg}, filepath.Join(o.workDir, "sluice.log"))
	if err != nil {
		return res, err
	}
	defer p.stop()
	js, nc, names, err := connectSluice(ctx, port, o.partitions)
	if err != nil {
		return res, err
	}
	defer nc.Close()

	// Warm up: connections, caches, JIT-free but allocator-warm.
	round := int64(100)
	measure := func(n int, before func() error) (float64, error) {
		round++
		events, err := benchEvents(o, n, round)
		if err != nil {
			return 0, err
		}
		if err := resetCRM(ctx, sim, js, names); err != nil {
			return 0, err
		}
		if before != nil {
			if err := before(); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		if err := publishAll(ctx, js, names, events); err != nil {
			return 0, err
		}
		end, err := sim.waitDelivered(ctx, n, 10*time.Minute)
		if err != nil {
			return 0, err
		}
		return float64(n) / end.Sub(start).Seconds(), nil
	}
	if _, err := measure(o.warmupEvents, nil); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	cpu0, simCPU0 := p.cpuTime(), sim.cpuTime()
	if res.throughput, err = measure(o.events, nil); err != nil {
		return res, err
	}
	// Backlog drain: hold the enricher lanes with a server-side pause,
	// store the events, then resume and time the drain.
	var drainStart time.Time
	round++
	events, err := benchEvents(o, o.events, round)
	if err != nil {
		return res, err
	}
	if err := resetCRM(ctx, sim, js, names); err != nil {
		return res, err
	}
	if err := pauseStage(ctx, js, names, topology.StageEnricher, true); err != nil {
		return res, err
	}
	if err := publishAll(ctx, js, names, events); err != nil {
		return res, err
	}
	drainStart = time.Now()
	if err := pauseStage(ctx, js, names, topology.StageEnricher, false); err != nil {
		return res, err
	}
	end, err := sim.waitDelivered(ctx, len(events), 10*time.Minute)
	if err != nil {
		return res, err
	}
	res.drain = float64(len(events)) / end.Sub(drainStart).Seconds()
	res.cpuPerEvent = (p.cpuTime() - cpu0) / time.Duration(o.events+len(events))
	res.simCPUPerEvent = (sim.cpuTime() - simCPU0) / time.Duration(o.events+len(events))

	if !o.skipLatency {
		if err := latencyRun(ctx, o, sim, js, names, &res); err != nil {
			return res, err
		}
	}
	res.rssKB = p.peakRSS()
	return res, nil
}

// resetCRM empties the simulator (its records and its CRM objects) and so
// also Sluice's CRM id map: an upsert must not PATCH a record the fresh
// simulator never created (it would answer 404 and, by policy, hold).
func resetCRM(ctx context.Context, sim *simProc, js jetstream.JetStream, names topology.Names) error {
	if err := sim.client.Reset(ctx); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, names.CRMIDBucket())
	if err != nil {
		return err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	for k := range keys.Keys() {
		if err := kv.Purge(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func prepareDB(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	db, err := productdb.Open(ctx, productdb.Config{Driver: "sqlite", DSN: path})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := productdb.ExecScript(ctx, db, schemas.MarketplaceSeed()); err != nil {
		return err
	}
	return harness.SeedCustomers(ctx, db, 51, 2000)
}

func connectSluice(ctx context.Context, port, partitions int) (jetstream.JetStream, *nats.Conn, topology.Names, error) {
	names := topology.New(topology.Config{Partitions: partitions})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
			// Wait for the lanes: the dispatcher's last consumer exists.
			_, err = js.Consumer(ctx, names.DispatchStream(), names.ConsumerName(topology.StageDispatcher, partitions-1))
			if err == nil {
				_, err = js.Consumer(ctx, names.EventsStream(), names.ConsumerName(topology.StageEnricher, partitions-1))
			}
			if err == nil {
				return js, nc, names, nil
			}
			nc.Close()
		}
		if time.Now().After(deadline) {
			return nil, nil, names, fmt.Errorf("sluice did not come up: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pauseStage(ctx context.Context, js jetstream.JetStream, names topology.Names, stage topology.Stage, pause bool) error {
	stream, _ := names.StageFilter(stage, 0)
	for p := 0; p < names.Partitions(); p++ {
		var err error
		if pause {
			_, err = js.PauseConsumer(ctx, stream, names.ConsumerName(stage, p), time.Now().Add(time.Hour))
		} else {
			_, err = js.ResumeConsumer(ctx, stream, names.ConsumerName(stage, p))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// latencyRun publishes at o.latencyRate for o.latencyFor, each event's
// occurred_at set when it is published, and reads produce→CRM latency from
// the simulator's record (same machine clock).
func latencyRun(ctx context.Context, o options, sim *simProc, js jetstream.JetStream, names topology.Names, res *e2eResult) error {
	n := int(o.latencyRate * o.latencyFor.Seconds())
	events, err := benchEvents(o, n, 999)
	if err != nil {
		return err
	}
	if err := resetCRM(ctx, sim, js, names); err != nil {
		return err
	}
	const tick = 5 * time.Millisecond
	perTick := o.latencyRate * tick.Seconds()
	start := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	sent := 0
	var futs []jetstream.PubAckFuture
	for sent < len(events) {
		<-t.C
		due := min(len(events), int(perTick*float64(time.Since(start)/tick)))
		for ; sent < due; sent++ {
			e := events[sent]
			e.OccurredAt = time.Now().UTC()
			f, err := publishOne(js, names, e)
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	res.latencyRate = float64(len(events)) / time.Since(start).Seconds()
	if _, err := sim.waitDelivered(ctx, len(events), 5*time.Minute); err != nil {
		return err
	}
	recs, err := sim.client.Records(ctx, 0)
	if err != nil {
		return err
	}
	var lat []time.Duration
	for _, r := range recs {
		if r.Status/100 != 2 {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, r.OccurredAt)
		if err != nil {
			continue
		}
		lat = append(lat, r.At.Sub(at))
	}
	if len(lat) == 0 {
		return fmt.Errorf("no latency samples")
	}
	slices.Sort(lat)
	res.latencyN = len(lat)
	res.p50 = lat[len(lat)/2]
	res.p99 = lat[len(lat)*99/100]
	res.max = lat[len(lat)-1]
	return nil
}

func publishOne(js jetstream.JetStream, names topology.Names, e *envelope.Envelope) (jetstream.PubAckFuture, error) {
	b, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(names.EventSubject(e.Type, e.Key))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, e.ID)
	return js.PublishMsgAsync(m)
}
