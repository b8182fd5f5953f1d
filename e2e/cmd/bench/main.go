// Command bench prints Sluice's throughput and latency figures in one run on
// one machine (`make bench`; it is a measurement, not a test). For each cell
// of a matrix (partitions, dispatcher processes) it measures:
//
//	(a) the ceiling: a bare ordered JetStream consumer per partition
//	    (MaxAckPending=1) POSTing each message to the CRM simulator;
//	(b) Sluice end to end: JetStream publish → enricher (a cached lookup,
//	    jq mapping) → dispatcher → the simulator, as events/s sustained, a
//	    drain of events stored while the enricher was paused, and p50/p99
//	    produce→CRM latency at a fixed rate (20M/hour by default);
//	(c) the ratio b/a;
//	(d) peak RSS of the Sluice process(es);
//
// plus the CPU time the Sluice processes and the simulator spend per event
// (steadier than events/s on a shared machine), the simulator's check of
// every run (lost, reordered, duplicates) and how much CPU other processes
// used meanwhile. It ends with one table, the targets marked.
//
// -backlog N instead builds a backlog of N events while the simulator
// answers 503 (the CRM is down), then brings it back and times the drain.
//
// The simulator always runs as a separate process (`sluice crmsim`), and so
// does Sluice for (b) (`sluice run`, and `sluice run --target dispatcher`
// for extra dispatcher replicas), so the figures include real loopback
// HTTP and NATS TCP.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type options struct {
	bin          string
	events       int
	partitions   int
	keys         int
	latencyRate  float64
	latencyFor   time.Duration
	skipCeiling  bool
	skipLatency  bool
	workDir      string
	warmupEvents int
	matrix       string
	cells        []cell
	cpuprofile   string
	heapprofile  string
	configExtra  string
	profileFor   time.Duration
	backlog      int
	backlogRate  float64
	backlogLedge bool
	keep         bool
	flaky        []float64
	flakyEvents  int
	flakyPairs   int
}

func main() {
	var o options
	flag.StringVar(&o.bin, "sluice", "bin/sluice", "the sluice binary (make build)")
	flag.IntVar(&o.events, "events", 60000, "events per throughput run")
	flag.StringVar(&o.matrix, "matrix", "1,16,64,16x2,16+ledger,16+ledger+inline",
		"cells to measure, comma-separated: <partitions>[x<dispatcher processes>][+ledger][+inline] (+ledger: delivery ledger on, else off; +inline: dispatcher.inline)")
	flag.IntVar(&o.partitions, "partitions", 16, "partitions (-backlog)")
	flag.IntVar(&o.keys, "keys", 2000, "distinct keys")
	flag.Float64Var(&o.latencyRate, "latency-rate", targetRate, "events/s for the latency run (5600/s = 20M/hour)")
	flag.DurationVar(&o.latencyFor, "latency-for", 15*time.Second, "length of the latency run")
	flag.BoolVar(&o.skipCeiling, "skip-ceiling", false, "skip (a)")
	flag.BoolVar(&o.skipLatency, "skip-latency", false, "skip the latency run")
	flag.IntVar(&o.warmupEvents, "warmup", 5000, "events sent before measuring")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "",
		"write a CPU profile of `sluice run` under full load to this file (one per cell, named after it; -backlog: of the drain)")
	flag.StringVar(&o.heapprofile, "heapprofile", "",
		"-backlog: write a heap profile of `sluice run` to this file when the backlog is built")
	flag.DurationVar(&o.profileFor, "profile-for", 20*time.Second, "length of the CPU profile")
	flag.IntVar(&o.backlog, "backlog", 0,
		"instead of the matrix: build a backlog of this many events while the CRM is down, then time the drain")
	flag.Float64Var(&o.backlogRate, "backlog-rate", 0,
		"events/s produced while the CRM is down (0: as fast as JetStream takes them)")
	flag.StringVar(&o.configExtra, "config-extra", "",
		"YAML appended to every sluice process's config, for top-level keys the bench does not set "+
			"(e.g. 'runtime: {gc_percent: 400}')")
	flag.BoolVar(&o.backlogLedge, "backlog-ledger", false, "-backlog: with the delivery ledger on")
	flakyList := flag.String("flaky", "0.01,0.05",
		"error rates of the flaky-CRM runs (the simulator answers that share of requests with 503 at random), "+
			"comma-separated; run in the 16-partition one-process cells after the healthy run, -flaky-pairs times each right after a healthy run of the same size, "+
			"and reported as the median of those ratios; '' for none")
	flag.IntVar(&o.flakyEvents, "flaky-events", 0, "events per flaky-CRM run (0: half of -events)")
	flag.IntVar(&o.flakyPairs, "flaky-pairs", 3, "healthy+flaky run pairs per error rate; the ratio is their median")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs, data) and print its path")
	flag.Parse()
	var err error
	if o.cells, err = parseMatrix(o.matrix); err != nil {
		fail(err)
	}
	if o.flaky, err = parseRates(*flakyList); err != nil {
		fail(err)
	}
	if o.flakyPairs < 1 {
		fail(fmt.Errorf("-flaky-pairs: at least 1, not %d", o.flakyPairs))
	}
	if o.flakyEvents <= 0 {
		o.flakyEvents = max(o.events/2, 1000)
	}
	for _, p := range []*string{&o.cpuprofile, &o.heapprofile} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				fail(err)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		fail(err)
	}
	if o.keep {
		fmt.Println("work directory (kept):", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	o.workDir = dir
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		fail(err)
	}
	if err := run(ctx, o); err != nil {
		if !o.keep {
			os.RemoveAll(dir)
		}
		fail(err)
	}
}

// parseRates reads -flaky: comma-separated shares within (0, 1).
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 || v >= 1 {
			return nil, fmt.Errorf("-flaky: %q is not a share between 0 and 1 (e.g. 0.05)", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func run(ctx context.Context, o options) error {
	host, _ := os.Hostname()
	fmt.Printf("Sluice benchmark — %s, %d CPUs, %s, loadavg %s, %s\n",
		host, runtime.NumCPU(), runtime.Version(), loadavg(), time.Now().Format(time.RFC3339))
	sim, err := startSim(ctx, o)
	if err != nil {
		return err
	}
	defer sim.stop()
	if o.backlog > 0 {
		return runBacklog(ctx, o, sim)
	}
	fmt.Printf("matrix %s: %d events per throughput run, %d keys, latency at %.0f/s for %s\n",
		o.matrix, o.events, o.keys, o.latencyRate, o.latencyFor)
	return runMatrix(ctx, o, sim)
}
