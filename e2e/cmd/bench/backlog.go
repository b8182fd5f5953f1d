package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// backlogChunk is how many events are generated and published at a time,
// so that millions of events never sit in the benchmark's memory at once.
const backlogChunk = 50000

// runBacklog builds a backlog of o.backlog events while the simulator
// answers 503 to everything (the CRM is down), then ends the outage and
// times the drain until every event has reached the simulator. It reports
// the RSS of the sluice process during both phases, the disk the data
// directory takes, and the simulator's check of the whole record.
func runBacklog(ctx context.Context, o options, sim *simProc) error {
	c := cell{partitions: o.partitions, dispatchers: 1, ledger: o.backlogLedge}
	n := o.backlog
	pace := "as fast as JetStream takes them"
	if o.backlogRate > 0 {
		pace = fmt.Sprintf("at %.0f/s", o.backlogRate)
	}
	fmt.Printf("backlog: %d events produced %s while the CRM is down, %d partitions, ledger %s, then the CRM comes back\n",
		n, pace, c.partitions, onOff(c.ledger))
	run, err := startSluice(ctx, o, c, sim)
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(run.dataDir)
	}
	defer run.stop()
	js, nc, names, err := connectSluice(ctx, run.port, c.partitions)
	if err != nil {
		return err
	}
	defer nc.Close()

	// Warm up; its rate gives a first estimate of how long this will take.
	warm, err := benchEvents(o, o.warmupEvents, 1)
	if err != nil {
		return err
	}
	if err := resetCRM(ctx, sim, js, names); err != nil {
		return err
	}
	t := time.Now()
	if err := publishAll(ctx, js, names, warm); err != nil {
		return err
	}
	if _, err := sim.waitDelivered(ctx, len(warm), 5*time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	warmRate := float64(len(warm)) / time.Since(t).Seconds()
	est := time.Duration(float64(n) / warmRate * float64(time.Second))
	if o.backlogRate > 0 {
		est = max(est, time.Duration(float64(n)/o.backlogRate*float64(time.Second)))
	}
	fmt.Printf("rough estimate from the warm-up (%.0f events/s end to end): build ≈ %s, drain ≈ %s\n",
		warmRate, est.Round(time.Second), (time.Duration(float64(n) / warmRate * float64(time.Second))).Round(time.Second))

	if err := resetCRM(ctx, sim, js, names); err != nil {
		return err
	}
	if err := sim.client.Outage(ctx, 1000*time.Hour); err != nil {
		return fmt.Errorf("simulator outage: %w", err)
	}
	ns := startNoise(func() time.Duration { return selfCPU() + sim.cpuTime() + run.cpuTime() })
	rss := sampleRSS(run.rss, 250*time.Millisecond)
	defer rss.close()
	rss.mark() // forget the warm-up
	var published atomic.Int64
	var phase atomic.Value
	phase.Store(phaseAt{"build", time.Now()})
	stopProgress := progress(ctx, n, &published, &phase, run, sim, js, names)
	defer stopProgress()

	// Build.
	start := time.Now()
	gen := backlogGen{o: o, seq: map[string]int{}}
	for published.Load() < int64(n) {
		events, err := gen.next(min(backlogChunk, n-int(published.Load())))
		if err != nil {
			return err
		}
		if o.backlogRate > 0 {
			err = publishPaced(ctx, js, names, events, o.backlogRate, start, int(published.Load()))
		} else {
			err = publishAll(ctx, js, names, events)
		}
		if err != nil {
			return err
		}
		published.Add(int64(len(events)))
	}
	pubDone := time.Now()
	if err := waitEnriched(ctx, js, names); err != nil {
		return err
	}
	built := time.Now()
	buildRSS := rss.mark()
	if o.heapprofile != "" {
		if err := run.fetchHeap(ctx, o.heapprofile); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		fmt.Printf("  heap profile at the end of the build: %s (go tool pprof -sample_index=inuse_space -top %s)\n",
			o.heapprofile, o.heapprofile)
	}
	diskBuilt := diskUsage(run.dataDir)
	evInfo, err1 := streamState(ctx, js, names.EventsStream())
	dispInfo, err2 := streamState(ctx, js, names.DispatchStream())
	if err1 != nil || err2 != nil {
		return fmt.Errorf("stream info: %v %v", err1, err2)
	}

	// Drain.
	back := time.Now()
	cpu0, simCPU0 := run.cpuTime(), sim.cpuTime()
	phase.Store(phaseAt{"drain", back})
	if err := sim.client.Outage(ctx, 0); err != nil {
		return fmt.Errorf("simulator outage end: %w", err)
	}
	// A CPU profile of the drain's first o.profileFor, while every lane
	// has a backlog.
	profc := make(chan error, 1)
	if o.cpuprofile != "" {
		go func() { profc <- run.fetchProfile(ctx, o.profileFor, o.cpuprofile) }()
	} else {
		profc <- nil
	}
	var first time.Time
	for first.IsZero() {
		got, err := sim.distinctDelivered(ctx)
		if err != nil {
			return err
		}
		if got > 0 {
			first = time.Now()
			break
		}
		if time.Since(back) > 5*time.Minute {
			return fmt.Errorf("nothing delivered 5 minutes after the CRM came back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	done, err := sim.waitDelivered(ctx, n, 24*time.Hour)
	if err != nil {
		return err
	}
	if err := <-profc; err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if o.heapprofile != "" {
		// The drain's allocations are this profile less the build's.
		drainHeap := suffixed(o.heapprofile, "drain")
		if err := run.fetchHeap(ctx, drainHeap); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		fmt.Printf("  heap profile at the end of the drain: %s (what the drain allocated: go tool pprof -sample_index=alloc_space -diff_base %s -top %s)\n",
			drainHeap, o.heapprofile, drainHeap)
	}
	drainCPU, drainSim := run.cpuTime()-cpu0, sim.cpuTime()-simCPU0
	phase.Store(phaseAt{"check", time.Now()})
	drainRSS := rss.mark()
	diskDrained := diskUsage(run.dataDir)
	rep, err := sim.client.SelfCheck(ctx)
	if err != nil {
		return fmt.Errorf("simulator check: %w", err)
	}
	stopProgress()

	drain := done.Sub(back)
	rate := float64(n) / drain.Seconds()
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	fmt.Printf("\nBacklog of %d events, %d partitions — %s\n", n, c.partitions, time.Now().Format("2006-01-02 15:04"))
	fmt.Printf("  build: published in %s (%.0f/s), enriched and waiting for the CRM after %s (%.0f/s)\n",
		pubDone.Sub(start).Round(100*time.Millisecond), float64(n)/pubDone.Sub(start).Seconds(),
		built.Sub(start).Round(100*time.Millisecond), float64(n)/built.Sub(start).Seconds())
	fmt.Printf("  on disk after the build: data dir %.0f MiB (%.0f B/event); events stream %d msgs %.0f MiB, dispatch stream %d msgs %.0f MiB\n",
		float64(diskBuilt)/(1<<20), float64(diskBuilt)/float64(n), evInfo.Msgs, float64(evInfo.Bytes)/(1<<20),
		dispInfo.Msgs, float64(dispInfo.Bytes)/(1<<20))
	fmt.Printf("  peak RSS of sluice: %.0f MiB during the build, %.0f MiB during the drain (VmHWM over the whole run %.0f MiB)\n",
		mib(buildRSS), mib(drainRSS), mib(run.peakRSS()[0]))
	fmt.Printf("  drain: first delivery %s after the CRM came back; all %d delivered after %s = %.0f events/s (%.0f/s from the first delivery) %s\n",
		first.Sub(back).Round(10*time.Millisecond), n, drain.Round(100*time.Millisecond), rate,
		float64(n)/done.Sub(first).Seconds(), drainMark(n, drain))
	fmt.Printf("  CPU per event during the drain: %.0f µs sluice, %.0f µs simulator\n",
		float64(drainCPU)/float64(n)/1e3, float64(drainSim)/float64(n)/1e3)
	fmt.Printf("  on disk after the drain: data dir %.0f MiB\n", float64(diskDrained)/(1<<20))
	fmt.Printf("  other load on the machine: %.2f cores (loadavg %s → %s)\n", ns.cores(), ns.startLoad, loadavg())
	tt := rep.Totals
	verdict := "ok"
	if !rep.OK() || tt.Expected != n || tt.Delivered != n {
		verdict = "FAIL"
	}
	fmt.Printf("  simulator check: %s — expected %d, delivered %d, missing %d, reordered keys %d, duplicate ids %d (extra deliveries %d), unexpected %d, %d requests\n",
		verdict, tt.Expected, tt.Delivered, tt.Missing, tt.ReorderedKeys, tt.DuplicateIDs, tt.ExtraDeliveries,
		tt.Unexpected, tt.Attempts)
	if verdict != "ok" {
		return fmt.Errorf("simulator check failed: %s", firstLine(rep.String()))
	}
	if o.cpuprofile != "" {
		fmt.Printf("  CPU profile of `sluice run` over the drain's first %s: %s\n", o.profileFor, o.cpuprofile)
		printTop(o.cpuprofile)
	}
	return nil
}

func drainMark(n int, d time.Duration) string {
	if n != targetBacklog {
		return ""
	}
	return fmt.Sprintf("[target ≤ %s: %s]", targetDrain, mark(d <= targetDrain))
}

// backlogGen makes the backlog chunk by chunk. Ids are renumbered per key
// across chunks ("b:<key>#<n>", n from 1), so the simulator's SelfCheck
// can check order, losses and duplicates without the expected list.
type backlogGen struct {
	o     options
	seq   map[string]int
	chunk int64
}

func (g *backlogGen) next(n int) ([]*envelope.Envelope, error) {
	g.chunk++
	events, err := benchEvents(g.o, n, 7000+g.chunk)
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		g.seq[e.Key]++
		e.ID = fmt.Sprintf("b:%s#%d", e.Key, g.seq[e.Key])
	}
	return events, nil
}

// publishPaced publishes events at rate per second, counted from start
// with before events already sent, and waits for every ack.
func publishPaced(ctx context.Context, js jetstream.JetStream, names topology.Names, events []*envelope.Envelope,
	rate float64, start time.Time, before int) error {
	var futs []jetstream.PubAckFuture
	for i, e := range events {
		due := start.Add(time.Duration(float64(before+i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		f, err := publishOne(js, names, e)
		if err != nil {
			return err
		}
		futs = append(futs, f)
		if len(futs) == 4000 {
			if err := waitAcks(ctx, futs); err != nil {
				return err
			}
			futs = futs[:0]
		}
	}
	return waitAcks(ctx, futs)
}

func waitAcks(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitEnriched waits until every enricher lane has nothing pending: the
// whole backlog sits in the dispatch stream, waiting for the CRM.
func waitEnriched(ctx context.Context, js jetstream.JetStream, names topology.Names) error {
	last, lastAt := uint64(1<<63), time.Now()
	for {
		left, err := enricherPending(ctx, js, names)
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if left != last {
			last, lastAt = left, time.Now()
		}
		if time.Since(lastAt) > 90*time.Second {
			return fmt.Errorf("enricher stalled with %d events pending", left)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func enricherPending(ctx context.Context, js jetstream.JetStream, names topology.Names) (uint64, error) {
	var left uint64
	for p := 0; p < names.Partitions(); p++ {
		ci, err := js.Consumer(ctx, names.EventsStream(), names.ConsumerName(topology.StageEnricher, p))
		if err != nil {
			return 0, err
		}
		info, err := ci.Info(ctx)
		if err != nil {
			return 0, err
		}
		left += info.NumPending + uint64(info.NumAckPending)
	}
	return left, nil
}

func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

// phaseAt is the backlog run's phase and when it began.
type phaseAt struct {
	name string
	at   time.Time
}

// progress prints a line every 10 s: phase, produced, enriched and
// delivered counts, RSS, disk, and a naive time left.
func progress(ctx context.Context, n int, published *atomic.Int64, phase *atomic.Value, run *sluiceRun,
	sim *simProc, js jetstream.JetStream, names topology.Names) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur := phase.Load().(phaseAt)
			ph, phaseStart := cur.name, cur.at
			pending, _ := enricherPending(ctx, js, names)
			got, _ := sim.distinctDelivered(ctx)
			pub := published.Load()
			enriched := max(pub-int64(pending), 0)
			left := ""
			switch {
			case ph == "build" && enriched > 0:
				left = fmt.Sprintf(", build ends in ~%s",
					(time.Duration(float64(time.Since(start)) * (float64(n)/float64(enriched) - 1))).Round(time.Second))
			case ph == "drain" && got > 0:
				left = fmt.Sprintf(", drain ends in ~%s",
					(time.Duration(float64(time.Since(phaseStart)) * (float64(n)/float64(got) - 1))).Round(time.Second))
			}
			fmt.Printf("  [%s %s] produced %d, enriched %d, delivered %d of %d; RSS %.0f MiB, disk %.0f MiB%s\n",
				ph, time.Since(start).Round(time.Second), pub, enriched, got, n, float64(run.rss())/1024,
				float64(diskUsage(run.dataDir))/(1<<20), left)
		}
	}()
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			cancel()
			<-done
		}
	}
}
