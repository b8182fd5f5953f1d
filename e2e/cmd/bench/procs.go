package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice.dev/crmsim"
)

// proc is a child process whose peak RSS we can read.
type proc struct {
	cmd *exec.Cmd
}

func startProc(bin string, args []string, logPath string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd}, nil
}

// peakRSS is VmHWM in KiB (0 when unknown).
func (p *proc) peakRSS() int64 { return p.status("VmHWM:") }

// resetPeakRSS starts VmHWM again from the current RSS (Linux
// clear_refs "5"), so that peakRSS covers what runs after it.
func (p *proc) resetPeakRSS() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
}

// rss is VmRSS, the current resident set, in KiB (0 when unknown).
func (p *proc) rss() int64 { return p.status("VmRSS:") }

// status reads a kB field of /proc/<pid>/status.
func (p *proc) status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// exited reports whether the process has ended (it is then a zombie until
// stop reaps it, or gone).
func (p *proc) exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || (i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X'))
}

// cpuTime is the CPU time (user + system) the process has used so far, 0
// when unknown. /proc/<pid>/stat counts in clock ticks of 1/100 s.
func (p *proc) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) start with
	// the state; utime and stime are the 12th and 13th of them.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _, _ = p.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

type simProc struct {
	*proc
	url    string
	client *crmsim.Client
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startSim(ctx context.Context, o options) (*simProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc(o.bin, []string{"crmsim", "--addr", fmt.Sprintf("127.0.0.1:%d", port)}, o.workDir+"/crmsim.log")
	if err != nil {
		return nil, err
	}
	s := &simProc{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.client = crmsim.NewClient(s.url)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := s.client.Stats(ctx); err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("simulator did not start (see %s/crmsim.log)", o.workDir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDelivered polls the simulator until n distinct events got a 2xx
// (duplicates are not counted). It gives up when the count has not moved
// for stall, or at the deadline.
func (s *simProc) waitDelivered(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	const stall = 90 * time.Second
	deadline := time.Now().Add(timeout)
	last, lastAt := -1, time.Now()
	for {
		st, err := s.client.Stats(ctx)
		got := st.Delivered - st.Duplicates
		if err == nil && got >= n {
			return time.Now(), nil
		}
		if got != last {
			last, lastAt = got, time.Now()
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if now := time.Now(); now.After(deadline) || now.Sub(lastAt) > stall {
			return time.Time{}, fmt.Errorf("only %d of %d delivered (no progress for %s)", got, n,
				now.Sub(lastAt).Round(time.Second))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// distinctDelivered is the number of events with a 2xx so far.
func (s *simProc) distinctDelivered(ctx context.Context) (int, error) {
	st, err := s.client.Stats(ctx)
	return st.Delivered - st.Duplicates, err
}
