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

	"sluice.dev/e2e/crmsim"
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
func (p *proc) peakRSS() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
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

// waitDelivered polls the simulator until it answered n requests with 2xx.
func (s *simProc) waitDelivered(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.client.Stats(ctx)
		if err == nil && st.Delivered >= n {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d delivered after %s", st.Delivered, n, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
