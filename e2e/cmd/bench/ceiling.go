package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/loadgen"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// runCeiling measures (a): the same events stored in a partitioned stream,
// drained by one bare MaxAckPending=1 consumer per partition that POSTs each
// message body to the simulator and acks on 2xx. No validation, no lookup,
// no second hop: the most an ordered HTTP outlet can do on this machine.
// It returns events/s and the CPU time per event of this process (the
// embedded nats-server and the consumers) while draining.
func runCeiling(ctx context.Context, o options, sim *simProc) (float64, time.Duration, error) {
	dir := fmt.Sprintf("%s/ceiling-%d", o.workDir, o.partitions)
	defer os.RemoveAll(dir)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return 0, 0, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return 0, 0, fmt.Errorf("nats-server did not start")
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	names := topology.New(topology.Config{Prefix: "ceil", StreamPrefix: "CEIL", Partitions: o.partitions})
	if err := names.Ensure(ctx, js); err != nil {
		return 0, 0, err
	}
	events, err := benchEvents(o, o.events, 1)
	if err != nil {
		return 0, 0, err
	}
	if err := publishAll(ctx, js, names, events); err != nil {
		return 0, 0, err
	}
	if err := sim.client.Reset(ctx); err != nil {
		return 0, 0, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.partitions + 4}, Timeout: 10 * time.Second}
	var acked atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	start, cpu0 := time.Now(), selfCPU()
	var wg sync.WaitGroup
	for p := 0; p < o.partitions; p++ {
		stream, filter := names.StageFilter(topology.StageEnricher, p)
		cfg := names.LaneConsumerConfig(topology.StageEnricher, p, filter)
		c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
		if err != nil {
			return 0, 0, err
		}
		pull := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(8)}
		if len(cfg.PriorityGroups) > 0 { // the lanes' consumers are pinned: pull the way they do
			pull = append(pull, jetstream.PullPriorityGroup(cfg.PriorityGroups[0]))
		}
		it, err := c.Messages(pull...)
		if err != nil {
			return 0, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				if post(client, sim.url+"/api/ceiling", m) {
					_ = m.Ack()
					if acked.Add(1) == int64(len(events)) {
						once.Do(func() { close(done) })
					}
				} else {
					_ = m.NakWithDelay(10 * time.Millisecond)
				}
			}
		}()
		defer it.Stop()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		return 0, 0, fmt.Errorf("ceiling run did not finish: %d of %d", acked.Load(), len(events))
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	rate := float64(len(events)) / time.Since(start).Seconds()
	return rate, (selfCPU() - cpu0) / time.Duration(len(events)), nil
}

func post(client *http.Client, url string, m jetstream.Msg) bool {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(m.Data()))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", m.Headers().Get(nats.MsgIdHdr))
	sub := m.Subject()
	req.Header.Set("X-Sluice-Key", sub[strings.LastIndexByte(sub, '.')+1:])
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// benchEvents is a customer_updated plan (one cached lookup) over o.keys
// keys; round makes ids distinct between runs.
func benchEvents(o options, n int, round int64) ([]*envelope.Envelope, error) {
	p, err := loadgen.NewPlan(loadgen.PlanConfig{Events: n, Keys: min(o.keys, 2000), Seed: round, Simple: true,
		CustomerIDs: loadgen.Range{Min: 1, Max: 2000}})
	if err != nil {
		return nil, err
	}
	for _, e := range p.Events {
		e.ID = fmt.Sprintf("r%d:%s", round, e.ID)
	}
	return p.Events, nil
}

// publishAll stores events with async publishes from one connection (the
// server stores them in publish order) and waits for every ack.
func publishAll(ctx context.Context, js jetstream.JetStream, names topology.Names, events []*envelope.Envelope) error {
	const window = 4000
	var futs []jetstream.PubAckFuture
	for i, e := range events {
		b, err := e.Marshal()
		if err != nil {
			return err
		}
		m := nats.NewMsg(names.EventSubject(e.Type, e.Key))
		m.Data = b
		m.Header.Set(nats.MsgIdHdr, e.ID)
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futs = append(futs, f)
		if len(futs) == window || i == len(events)-1 {
			for _, f := range futs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			futs = futs[:0]
		}
	}
	return nil
}
