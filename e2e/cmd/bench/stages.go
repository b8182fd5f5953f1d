package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// stageShare is one line of a profile's split: CPU per event spent in one
// part of the process.
type stageShare struct {
	name     string
	perEvent time.Duration
	share    float64
}

// stageSplit reads a CPU profile of `sluice run` and splits its samples
// into parts: the lane goroutines of each stage (their pprof label
// "stage", set by mesh/lane), then the unlabelled rest by the first
// recognisable frame of the stack (the embedded nats-server, the NATS
// client, the HTTP transport, GC, other). events is how many events went
// through during the profile.
func stageSplit(path string, events int) ([]stageShare, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, 0, err
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, 0, fmt.Errorf("%s: no cpu samples", path)
	}
	by := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		by[partOf(s)] += v
	}
	if events <= 0 || total == 0 {
		return nil, 0, fmt.Errorf("%s: no events or samples", path)
	}
	var out []stageShare
	for name, v := range by {
		out = append(out, stageShare{name: name, perEvent: time.Duration(v / int64(events)),
			share: float64(v) / float64(total)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].share > out[j].share })
	return out, time.Duration(total / int64(events)), nil
}

// partOf names the part of the process a sample belongs to.
func partOf(s *profile.Sample) string {
	if st := s.Label["stage"]; len(st) > 0 {
		return "lane " + st[0]
	}
	// Innermost frame first: the first match from the root decides, so
	// walk from the outermost frame.
	for i := len(s.Location) - 1; i >= 0; i-- {
		for _, ln := range s.Location[i].Line {
			if ln.Function == nil {
				continue
			}
			fn := ln.Function.Name
			switch {
			case strings.HasPrefix(fn, "github.com/nats-io/nats-server/"):
				return "nats-server"
			case strings.HasPrefix(fn, "github.com/nats-io/nats.go"):
				return "nats client"
			case strings.HasPrefix(fn, "net/http."):
				return "http transport"
			case strings.HasPrefix(fn, "runtime.gcBgMarkWorker"), strings.HasPrefix(fn, "runtime.bgsweep"),
				strings.HasPrefix(fn, "runtime.bgscavenge"):
				return "gc (background)"
			case strings.HasPrefix(fn, "sluice.dev/"):
				return "other sluice"
			}
		}
	}
	return "other"
}

// printStageSplit prints the split of a profile, one part a line.
func printStageSplit(path string, events int) {
	parts, total, err := stageSplit(path, events)
	if err != nil {
		fmt.Printf("    (stage split: %v)\n", err)
		return
	}
	fmt.Printf("    CPU per event by part of `sluice run` (profile, %d events, %.0f µs/event sampled):\n", events, float64(total)/1e3)
	for _, p := range parts {
		fmt.Printf("      %-18s %6.1f µs  %5.1f %%\n", p.name, float64(p.perEvent)/1e3, 100*p.share)
	}
}
