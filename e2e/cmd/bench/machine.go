package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// noise measures how busy the machine was with work that is not the
// benchmark's: the CPU time every process used (/proc/stat) minus the CPU
// time of the benchmark's own processes, per second of wall time. On a
// quiet 2-core machine it is near 0; 1.0 means another process kept one
// core busy the whole time.
type noise struct {
	start     time.Time
	machine0  time.Duration
	ours0     time.Duration
	oursNow   func() time.Duration
	startLoad string
}

func startNoise(ours func() time.Duration) *noise {
	return &noise{start: time.Now(), machine0: machineCPU(), ours0: ours(), oursNow: ours, startLoad: loadavg()}
}

// cores is the other processes' average CPU use in cores since start.
func (n *noise) cores() float64 {
	wall := time.Since(n.start).Seconds()
	if wall <= 0 {
		return 0
	}
	other := (machineCPU() - n.machine0) - (n.oursNow() - n.ours0)
	return max(other.Seconds()/wall, 0)
}

// machineCPU is the busy CPU time of the whole machine (every core) from
// the first line of /proc/stat (user nice system idle iowait irq softirq
// steal ..., in 1/100 s).
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// selfCPU is the benchmark process's own CPU time (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rssSampler samples a process group's current RSS every interval and
// keeps the highest value since the last mark.
type rssSampler struct {
	mu   sync.Mutex
	peak int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(read func() int64, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			v := read()
			s.mu.Lock()
			s.peak = max(s.peak, v)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// mark returns the peak (KiB) since the previous mark and starts anew.
func (s *rssSampler) mark() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peak
	s.peak = 0
	return p
}

func (s *rssSampler) close() {
	close(s.stop)
	<-s.done
}

// diskUsage is the space the files under dir take on disk (allocated
// blocks, like du), in bytes.
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
