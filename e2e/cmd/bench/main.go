// Command bench prints Sluice's throughput and latency figures in one run on
// one machine (`make bench`; it is a measurement, not a test):
//
//	(a) the ceiling: a bare ordered JetStream consumer per partition
//	    (MaxAckPending=1) POSTing each message to the CRM simulator;
//	(b) Sluice end to end: JetStream publish → enricher (a cached lookup,
//	    jq mapping) → dispatcher → the simulator, as events/s sustained, and
//	    p50/p99 produce→CRM latency at a fixed rate (20M/hour by default);
//	(c) the ratio b/a;
//	(d) peak RSS of the Sluice process.
//
// It also prints the CPU time the Sluice process and the simulator spend
// per event, which is steadier than events/s on a shared machine.
//
// The simulator always runs as a separate process (`sluice crmsim`), and so
// does Sluice for (b) (`sluice run`), so the figures include real loopback
// HTTP and NATS TCP.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
}

func main() {
	var o options
	flag.StringVar(&o.bin, "sluice", "bin/sluice", "the sluice binary (make build)")
	flag.IntVar(&o.events, "events", 60000, "events per throughput run")
	flag.IntVar(&o.partitions, "partitions", 16, "partitions")
	flag.IntVar(&o.keys, "keys", 2000, "distinct keys")
	flag.Float64Var(&o.latencyRate, "latency-rate", 5600, "events/s for the latency run (5600/s = 20M/hour)")
	flag.DurationVar(&o.latencyFor, "latency-for", 15*time.Second, "length of the latency run")
	flag.BoolVar(&o.skipCeiling, "skip-ceiling", false, "skip (a)")
	flag.BoolVar(&o.skipLatency, "skip-latency", false, "skip the latency run")
	flag.IntVar(&o.warmupEvents, "warmup", 5000, "events sent before measuring")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	o.workDir = dir
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		fail(err)
	}
	if err := run(ctx, o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func run(ctx context.Context, o options) error {
	fmt.Printf("Sluice benchmark — %d events per run, %d partitions, %d keys, %s\n",
		o.events, o.partitions, o.keys, time.Now().Format(time.RFC3339))
	sim, err := startSim(ctx, o)
	if err != nil {
		return err
	}
	defer sim.stop()

	var ceiling float64
	if !o.skipCeiling {
		ceiling, err = runCeiling(ctx, o, sim)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		fmt.Printf("(a) ceiling, bare ordered consumers → simulator: %8.0f events/s\n", ceiling)
	}
	res, err := runEndToEnd(ctx, o, sim)
	if err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	fmt.Printf("(b) Sluice end to end, sustained:               %8.0f events/s (%.1fM/hour)\n", res.throughput, res.throughput*3600/1e6)
	fmt.Printf("    backlog drain (events stored before start): %8.0f events/s\n", res.drain)
	fmt.Printf("    CPU per event (sustained + drain runs):     %8.0f µs sluice, %.0f µs simulator\n",
		float64(res.cpuPerEvent)/1e3, float64(res.simCPUPerEvent)/1e3)
	if res.latencyN > 0 {
		fmt.Printf("    produce→CRM latency at %.0f/s for %s: p50 %s  p99 %s  max %s  (%d events, achieved %.0f/s)\n",
			o.latencyRate, o.latencyFor, res.p50.Round(10*time.Microsecond), res.p99.Round(10*time.Microsecond),
			res.max.Round(10*time.Microsecond), res.latencyN, res.latencyRate)
	}
	if ceiling > 0 {
		fmt.Printf("(c) ratio b/a:                                  %8.2f\n", res.throughput/ceiling)
	}
	fmt.Printf("(d) peak RSS of the sluice process:             %8.0f MiB (simulator %0.f MiB)\n",
		float64(res.rssKB)/1024, float64(sim.peakRSS())/1024)
	return nil
}
