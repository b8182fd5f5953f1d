package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cell is one configuration of the matrix: the partition count and the
// number of `sluice run` processes that run the dispatcher.
type cell struct {
	partitions int
	// dispatchers is 1 (the main process only) or more: each extra one is
	// a `sluice run --target dispatcher` process on the main one's NATS.
	dispatchers int
	// ledger turns the delivery ledger (issue 7) on for the cell; see
	// ledgerYAML.
	ledger bool
	// inline turns dispatcher.inline on: the enricher's lanes send to the
	// CRM (one consumer hop per event).
	inline bool
}

// String is the cell as written in -matrix: "16", "16x2", "16+ledger".
func (c cell) String() string {
	s := strconv.Itoa(c.partitions)
	if c.dispatchers > 1 {
		s += "x" + strconv.Itoa(c.dispatchers)
	}
	if c.ledger {
		s += "+ledger"
	}
	if c.inline {
		s += "+inline"
	}
	return s
}

// flaky reports whether the cell gets the flaky-CRM runs (-flaky): the
// one-process 16-partition cells.
func (c cell) flaky() bool { return c.partitions == 16 && c.dispatchers == 1 }

// parseMatrix reads -matrix: comma-separated cells
// "<partitions>[x<dispatchers>][+ledger][+inline]".
func parseMatrix(s string) ([]cell, error) {
	var cells []cell
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		c := cell{dispatchers: 1}
		for _, opt := range []struct {
			suffix string
			on     *bool
		}{{"+inline", &c.inline}, {"+ledger", &c.ledger}, {"+inline", &c.inline}} {
			if g, ok := strings.CutSuffix(f, opt.suffix); ok {
				f, *opt.on = g, true
			}
		}
		ps, ds, two := strings.Cut(f, "x")
		var err error
		if c.partitions, err = strconv.Atoi(ps); err != nil || c.partitions < 1 {
			return nil, fmt.Errorf("-matrix: %q: want <partitions>[x<dispatchers>][+ledger], e.g. 16x2", f)
		}
		if two {
			if c.dispatchers, err = strconv.Atoi(ds); err != nil || c.dispatchers < 1 {
				return nil, fmt.Errorf("-matrix: %q: dispatchers must be a number >= 1", f)
			}
		}
		cells = append(cells, c)
	}
	if len(cells) == 0 {
		return nil, fmt.Errorf("-matrix: no cells in %q", s)
	}
	return cells, nil
}

// ledgerYAML is the config fragment that turns the delivery ledger
// (ledger.enabled, on by default in sluice) on for a "+ledger" cell and
// off for every other cell, so "16,16+ledger" measures its cost in one run.
func ledgerYAML(on bool) (string, error) {
	return fmt.Sprintf("ledger: {enabled: %t}\n", on), nil
}

// sluiceRun is Sluice under test: procs[0] runs everything with the
// embedded NATS (`sluice run`), procs[1:] are extra dispatcher replicas.
type sluiceRun struct {
	procs   []*proc
	ops     []string // ops listener base URL of each process
	dataDir string
	port    int // the embedded NATS port
}

// startSluice writes the configs, starts the processes and waits until
// every one answers /readyz and the main one has created its lanes.
func startSluice(ctx context.Context, o options, c cell, sim *simProc) (*sluiceRun, error) {
	r := &sluiceRun{dataDir: filepath.Join(o.workDir, "sluice-"+c.String())}
	if err := prepareDB(ctx, filepath.Join(r.dataDir, "product.db")); err != nil {
		return nil, err
	}
	ledger, err := ledgerYAML(c.ledger)
	if err != nil {
		return nil, err
	}
	if r.port, err = freePort(); err != nil {
		return nil, err
	}
	pprof := ""
	if o.cpuprofile != "" || o.heapprofile != "" {
		pprof = ", pprof: true"
	}
	for i := 0; i < c.dispatchers; i++ {
		opsPort, err := freePort()
		if err != nil {
			r.stop()
			return nil, err
		}
		var cfg string
		args := []string{"run"}
		if i == 0 {
			cfg = fmt.Sprintf(`
data_dir: %s
log: {level: warn, format: json}
nats: {embedded: {listen: "127.0.0.1:%d"}}
topology: {partitions: %d, balance_replicas: %t}
ingest: {http_addr: ""}
dispatcher: {crm: {url: %q}, inline: %t}
demo: {enabled: "false"}
watchdog: {page: {audit_every: -1s}}  # its own ledger audits would read the whole backlog mid-measurement
ops: {addr: "127.0.0.1:%d"%s}
progress_interval: 1h
%s`, r.dataDir, r.port, c.partitions, c.dispatchers > 1, sim.url, c.inline, opsPort, pprof, ledger)
		} else {
			dir := fmt.Sprintf("%s-dispatcher%d", r.dataDir, i)
			cfg = fmt.Sprintf(`
data_dir: %s
log: {level: warn, format: json}
nats: {url: "nats://127.0.0.1:%d"}
topology: {partitions: %d, balance_replicas: %t}
dispatcher: {crm: {url: %q}, inline: %t}
ops: {addr: "127.0.0.1:%d"%s}
progress_interval: 1h
%s`, dir, r.port, c.partitions, c.dispatchers > 1, sim.url, c.inline, opsPort, pprof, ledger)
			args = append(args, "--target", "dispatcher")
		}
		cfg += "\n" + o.configExtra + "\n"
		path := filepath.Join(o.workDir, fmt.Sprintf("sluice-%s-%d.yaml", c, i))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			r.stop()
			return nil, err
		}
		logPath := filepath.Join(o.workDir, fmt.Sprintf("sluice-%s-%d.log", c, i))
		p, err := startProc(o.bin, append(args, "--config", path), logPath)
		if err != nil {
			r.stop()
			return nil, err
		}
		r.procs = append(r.procs, p)
		r.ops = append(r.ops, fmt.Sprintf("http://127.0.0.1:%d", opsPort))
		// The replicas join the main process's NATS: wait for it first.
		if err := waitReady(ctx, r.ops[i], p, logPath); err != nil {
			r.stop()
			return nil, err
		}
	}
	return r, nil
}

// waitReady polls the ops listener's /readyz (the ops listener starts
// after every service of the process).
func waitReady(ctx context.Context, base string, p *proc, logPath string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			tail, _ := os.ReadFile(logPath)
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return fmt.Errorf("sluice did not become ready (%s):\n%s", logPath, tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cpuTime is the CPU time of every process of the run.
func (r *sluiceRun) cpuTime() time.Duration {
	var t time.Duration
	for _, p := range r.procs {
		t += p.cpuTime()
	}
	return t
}

// cpuTimes is the CPU time of each process (main first).
func (r *sluiceRun) cpuTimes() []time.Duration {
	out := make([]time.Duration, len(r.procs))
	for i, p := range r.procs {
		out[i] = p.cpuTime()
	}
	return out
}

// peakRSS is each process's peak RSS (VmHWM) in KiB.
func (r *sluiceRun) peakRSS() []int64 {
	out := make([]int64, len(r.procs))
	for i, p := range r.procs {
		out[i] = p.peakRSS()
	}
	return out
}

// resetPeakRSS restarts every process's VmHWM (proc.resetPeakRSS); false
// when the system would not.
func (r *sluiceRun) resetPeakRSS() bool {
	for _, p := range r.procs {
		if p.resetPeakRSS() != nil {
			return false
		}
	}
	return true
}

// rss is the summed current RSS in KiB.
func (r *sluiceRun) rss() int64 {
	var n int64
	for _, p := range r.procs {
		n += p.rss()
	}
	return n
}

// stop stops the replicas first, then the main process (it holds NATS).
func (r *sluiceRun) stop() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.procs[i].stop()
	}
}

// fetchProfile takes a CPU profile of the main process through its ops
// listener's /debug/pprof/profile (ops.pprof: true) and writes it to path.
func (r *sluiceRun) fetchProfile(ctx context.Context, d time.Duration, path string) error {
	return r.fetchPprof(ctx, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())), d+time.Minute, path)
}

// fetchHeap writes a heap profile of the main process (in-use and
// allocated space, after a GC) to path.
func (r *sluiceRun) fetchHeap(ctx context.Context, path string) error {
	return r.fetchPprof(ctx, "heap?gc=1", time.Minute, path)
}

func (r *sluiceRun) fetchPprof(ctx context.Context, what string, timeout time.Duration, path string) error {
	client := &http.Client{Timeout: timeout}
	url := r.ops[0] + "/debug/pprof/" + what
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s: %s: %s (is ops.pprof in this sluice build?)", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
