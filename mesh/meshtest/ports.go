package meshtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// Ports for servers a test restarts on the same port.
//
// A port a test picks, releases and binds later (a cluster node's ports,
// or a killed node's ports until it is restarted) can be taken by somebody
// else in between. Two ways were possible, and each could make a node "not
// start" (its listener fails with "address already in use" and
// ReadyForConnections waits out its 10 s):
//
//   - inside the kernel's ephemeral range (ip_local_port_range) the port
//     may become the local port of any client connection, even one that
//     dials the port itself while no server listens there (TCP
//     self-connect: a reconnecting client of the killed server);
//   - another test, in this process or another package's test binary
//     running at the same time, may pick the same free port.
//
// ReservePort excludes both: its ports come from below the ephemeral range,
// and each is held by an exclusive lock on a file named after it in a
// directory every test process shares, until the test ends.

// ErrNoFreePort: no port below the ephemeral range was free and unlocked
// after many tries. The caller fails the test; something holds the range.
var ErrNoFreePort = errors.New("meshtest: no free port below the ephemeral range")

// portLockDir is shared by every test binary on the machine (and user).
func portLockDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("sluice-test-ports-%d", os.Getuid()))
}

// portLockPath is the lock file of port p.
func portLockPath(p int) string {
	return filepath.Join(portLockDir(), fmt.Sprintf("%d.lock", p))
}

// ReservePort returns a loopback port that no other test holds and no
// listener uses now, and release, which frees it for other tests. Hold it
// for as long as a server may bind the port again (FreePorts releases at
// the end of the test).
func ReservePort() (port int, release func(), err error) {
	if err := os.MkdirAll(portLockDir(), 0o700); err != nil {
		return 0, nil, fmt.Errorf("meshtest: port lock directory: %w", err)
	}
	lo, hi := portRange()
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		unlock, ok := lockPort(portLockPath(p))
		if !ok {
			continue // another test holds it
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			unlock()
			continue // in use by something that is not a test of ours
		}
		ln.Close()
		return p, unlock, nil
	}
	return 0, nil, fmt.Errorf("%w (%d-%d)", ErrNoFreePort, lo, hi)
}

// FreePorts reserves n distinct ports (ReservePort) until the end of the
// test.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		p, release, err := ReservePort()
		if err != nil {
			t.Fatalf("%v", err)
		}
		t.Cleanup(release)
		ports = append(ports, p)
	}
	return ports
}

// portRange is the range ReservePort picks from (a test narrows it).
var portRange = portsBelowEphemeral

// portsBelowEphemeral is the range ReservePort picks from: the 16,384
// ports below the ephemeral range (Linux default 32768-60999).
func portsBelowEphemeral() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if _, err := fmt.Sscanf(string(b), "%d %d", &a, &z); err == nil && a > 2048 {
			hi = a
		}
	}
	return max(1024, hi-16384), hi
}
