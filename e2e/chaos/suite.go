// Package chaos is Sluice's chaos suite across real processes and networks
// (`make chaos`, see ../README.md and docs/runbook.md): a 3-node nats-server
// cluster, each node its own process in its own network namespace, the
// Sluice services as separate `sluice run --target` processes, the CRM
// simulator as `sluice crmsim`, the product database on PostgreSQL behind a
// TCP proxy. TestChaos drives events through it while it injects faults,
// then judges from the CRM's side (crmsim's Check against the plan) and
// from `sluice audit`. It runs only with SLUICE_CHAOS=1, as root.
package chaos

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"sluice.dev/crmsim"
)

// options are the suite's knobs (environment variables, see chaos_test.go).
type options struct {
	events     int
	keys       int
	partitions int
	nodes      int
	// publishFor spreads the producer over this long, so every fault of the
	// timeline meets traffic.
	publishFor time.Duration
	// drainTimeout bounds the wait for the last deliveries after the last
	// fault.
	drainTimeout time.Duration
	// inline runs with dispatcher.inline (SLUICE_CHAOS_INLINE=1).
	inline bool
}

// fault is one line of the fault log.
type fault struct {
	at   time.Duration
	what string
}

// suite is one run: its processes, fault log and output.
type suite struct {
	o          options
	dir        string
	natsServer string // binary paths
	sluice     string
	config     string
	pidFile    string
	out        io.Writer

	start   time.Time // when the traffic started (fault offsets count from it)
	mu      sync.Mutex
	faults  []fault
	crashes []string // unexpected exits during the traffic
	// startExits are exits before the traffic (a service that gives up
	// while a new cluster creates its streams), restarted like crashes.
	startExits []string
	closing    bool
	procs      []*proc

	cluster *cluster
	svc     map[string]*proc
	ops     map[string]string // ops listener base URL per target
	sim     *proc
	simURL  string
	crm     *crmsim.Client
}

func newSuite(o options, dir, bins string, out io.Writer) *suite {
	return &suite{
		o: o, dir: dir, out: out,
		natsServer: filepath.Join(bins, "nats-server"),
		sluice:     filepath.Join(bins, "sluice"),
		config:     filepath.Join(dir, "sluice.yaml"),
		pidFile:    filepath.Join(dir, "pids"),
		svc:        map[string]*proc{},
		ops:        map[string]string{},
	}
}

// since is the offset from the traffic's start (0 before it).
func (s *suite) since() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		return 0
	}
	return time.Since(s.start)
}

// note records a fault (or its end) at the current offset and prints it.
func (s *suite) note(format string, args ...any) {
	at := s.since()
	what := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.faults = append(s.faults, fault{at: at, what: what})
	s.mu.Unlock()
	fmt.Fprintf(s.out, "chaos: %s  %s\n", fmtOffset(at), what)
}

// logf prints a progress line that is not a fault.
func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "chaos: %s  %s\n", fmtOffset(s.since()), fmt.Sprintf(format, args...))
}

func fmtOffset(d time.Duration) string { return fmt.Sprintf("+%6.1fs", d.Seconds()) }

// newProc makes a child process whose unexpected exit is recorded as a
// crash (a finding) and restarted after a second, as a process supervisor
// would.
func (s *suite) newProc(name string, argv, env []string) *proc {
	p := &proc{name: name, argv: argv, env: env, pidFile: s.pidFile,
		logPath: filepath.Join(s.dir, name+".log")}
	p.onUnexpectedExit = func(p *proc, err error) {
		s.mu.Lock()
		closing, setup := s.closing, s.start.IsZero()
		switch {
		case closing:
		case setup:
			s.startExits = append(s.startExits, fmt.Sprintf("%s: %v", p.name, err))
		default:
			s.crashes = append(s.crashes, fmt.Sprintf("%s %s: %v", fmtOffset(time.Since(s.start)), p.name, err))
		}
		s.mu.Unlock()
		if closing {
			return
		}
		if setup {
			s.logf("%s exited during start-up (%v, see %s); restarting it in 1s", p.name, err, p.logPath)
		} else {
			s.note("UNEXPECTED EXIT of %s (%v); restarting it in 1s (log: %s)", p.name, err, p.logPath)
		}
		time.Sleep(time.Second)
		if err := p.start(); err != nil {
			s.note("restart of %s failed: %v", p.name, err)
		}
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p
}

// stopAll ends every process: services first, then the simulator and the
// NATS nodes. Exits from here on are expected.
func (s *suite) stopAll() {
	s.mu.Lock()
	s.closing = true
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		wg.Add(1)
		go func(p *proc) { defer wg.Done(); p.stop() }(procs[i])
	}
	wg.Wait()
}

// sleepUntil sleeps until offset at of the traffic's start.
func (s *suite) sleepUntil(at time.Duration) {
	if d := at - s.since(); d > 0 {
		time.Sleep(d)
	}
}

// writeFile writes name under the suite's directory.
func (s *suite) writeFile(name, content string) (string, error) {
	path := filepath.Join(s.dir, name)
	return path, os.WriteFile(path, []byte(content), 0o600)
}
