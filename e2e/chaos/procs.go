package chaos

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"sluice.dev/mesh/meshtest"
)

// proc is one child process of the suite (a NATS node, a Sluice service,
// the CRM simulator) that can be killed with SIGKILL and started again with
// the same command. Every pid is appended to the suite's pid file so
// .ci/chaos can end them if this test process itself is killed; the
// children also get SIGKILL when the test process dies (Pdeathsig).
type proc struct {
	name    string
	argv    []string
	env     []string
	logPath string
	pidFile string
	// onUnexpectedExit is called (once per exit) when the process ends
	// without kill9 or stop having ended it.
	onUnexpectedExit func(p *proc, err error)

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	expected bool // the current run is being ended by us
	starts   int
}

// start runs the command; its output is appended to logPath.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== chaos: start %d at %s\n", p.starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	if f, err := os.OpenFile(p.pidFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "%d %s\n", cmd.Process.Pid, p.argv[0])
		f.Close()
	}
	p.cmd, p.done, p.expected = cmd, make(chan struct{}), false
	p.starts++
	go p.wait(cmd, p.done, logf)
	return nil
}

func (p *proc) wait(cmd *exec.Cmd, done chan struct{}, logf io.Closer) {
	err := cmd.Wait()
	logf.Close()
	p.mu.Lock()
	expected := p.expected
	if p.cmd == cmd {
		p.cmd = nil
	}
	p.mu.Unlock()
	close(done)
	if !expected && p.onUnexpectedExit != nil {
		p.onUnexpectedExit(p, err)
	}
}

// signal sends sig and waits (up to timeout) for the process to end; the
// exit is expected. It returns false when the process was not running.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return false
	}
	p.expected = true
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
	return true
}

// kill9 ends the process with SIGKILL (no cleanup, no flush).
func (p *proc) kill9() bool { return p.signal(syscall.SIGKILL, 10*time.Second) }

// stop ends the process with SIGTERM (SIGKILL after 20 s).
func (p *proc) stop() { p.signal(syscall.SIGTERM, 20*time.Second) }

// freePort is a free TCP port on loopback, reserved for the rest of the
// run: a killed service restarts on it (meshtest.ReservePort says why a
// port the kernel picked is not safe to bind again later).
func freePort() (int, error) {
	p, _, err := meshtest.ReservePort()
	return p, err
}

// waitHTTP polls url until it answers 200 or timeout (a process that exits
// meanwhile is restarted by the suite, see suite.newProc).
func waitHTTP(url string, p *proc, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready after %s: %v (log: %s)", p.name, url, timeout, err, p.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// itoa is strconv.Itoa, short.
func itoa(i int) string { return strconv.Itoa(i) }
