package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// profilePath is where a cell's CPU profile goes: path itself for a
// single cell, path with the cell inserted before the extension otherwise
// (cpu.pprof → cpu-16x2.pprof).
func profilePath(path string, c cell, cells int) string {
	if cells <= 1 {
		return path
	}
	return suffixed(path, c.String())
}

// suffixed inserts "-"+s before path's extension (cpu.pprof → cpu-s.pprof).
func suffixed(path, s string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + s + ext
}

// profileRun takes a CPU profile of the main sluice process for
// o.profileFor while keeping it saturated: events are published in
// batches whenever fewer than two batches are still on their way to the
// simulator, so the lanes never run dry.
func profileRun(ctx context.Context, o options, run *sluiceRun, sim *simProc, js jetstream.JetStream,
	names topology.Names, path string) error {
	if err := resetCRM(ctx, sim, js, names); err != nil {
		return err
	}
	const batch = 10000
	errc := make(chan error, 1)
	go func() { errc <- run.fetchProfile(ctx, o.profileFor, path) }()
	published, through := 0, 0
	round := int64(5000)
	for {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			// Events that went through while the profile ran.
			if got, err := sim.distinctDelivered(ctx); err == nil {
				through = got
			}
			if _, err := sim.waitDelivered(ctx, published, 10*time.Minute); err != nil {
				return err
			}
			fmt.Printf("    CPU profile of `sluice run` under full load (%s, %d events): %s\n", o.profileFor, published, path)
			printStageSplit(path, through)
			printTop(path)
			return nil
		default:
		}
		got, err := sim.distinctDelivered(ctx)
		if err != nil {
			return err
		}
		if published-got >= 2*batch {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		round++
		events, err := benchEvents(o, batch, round)
		if err != nil {
			return err
		}
		if err := publishAll(ctx, js, names, events); err != nil {
			return err
		}
		published += batch
	}
}

// printTop prints the profile's top functions by cumulative and flat time
// (`go tool pprof`), when the go command is at hand.
func printTop(path string) {
	for _, args := range [][]string{
		{"tool", "pprof", "-top", "-nodecount=25", path},
		{"tool", "pprof", "-top", "-cum", "-nodecount=40", path},
	} {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			fmt.Printf("    (go tool pprof: %v; run: go tool pprof -top %s)\n", err, path)
			return
		}
		fmt.Printf("    $ go %s\n", strings.Join(args, " "))
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			fmt.Println("      " + l)
		}
	}
	_ = os.Stdout.Sync()
}
