package meshtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// TestFreePortsAreBelowTheEphemeralRange: the ports a cluster's nodes will
// bind are not ones the kernel hands out as the local port of a client
// connection meanwhile (a released ephemeral port was, now and then, and
// the node did not start).
func TestFreePortsAreBelowTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no /proc/sys/net/ipv4/ip_local_port_range here: %v", err)
	}
	var ephemeral, top int
	_, err = fmt.Sscanf(string(b), "%d %d", &ephemeral, &top)
	require.NoError(t, err)
	lo, _ := portsBelowEphemeral()
	ports := FreePorts(t, 6)
	seen := map[int]bool{}
	for _, p := range ports {
		require.False(t, seen[p], "port %d twice", p)
		seen[p] = true
		require.GreaterOrEqual(t, p, lo)
		require.Less(t, p, ephemeral, "port %d is in the ephemeral range %d-%d", p, ephemeral, top)
	}
}

// TestAHeldPortIsNotHandedOutAgain: a port stays reserved while nothing
// listens on it (a killed node waiting for its restart), for this process
// and for any other test binary (the lock is on a shared file), until it is
// released. The old check (is anything listening?) handed it out again.
func TestAHeldPortIsNotHandedOutAgain(t *testing.T) {
	lo, hi := portsBelowEphemeral()
	found := false
	for p := lo + rand.IntN(hi-lo-3); !found && p < hi-3; p += 3 {
		found = threeFree(p) // and unlocked; released again right away
		if found {
			old := portRange
			portRange = func() (int, int) { return p, p + 3 }
			t.Cleanup(func() { portRange = old })
		}
	}
	require.True(t, found, "no three free ports in a row")
	held := map[int]func(){}
	for range 3 {
		p, release, err := ReservePort()
		require.NoError(t, err)
		require.NotContains(t, held, p, "port %d handed out twice", p)
		held[p] = release
	}
	_, _, err := ReservePort()
	require.ErrorIs(t, err, ErrNoFreePort, "a held port, unbound, was handed out again")

	// Another process's lock (a separate open file) conflicts the same way.
	for p := range held {
		_, ok := lockPort(portLockPath(p))
		require.False(t, ok, "port %d's lock taken twice", p)
	}
	for p, release := range held { // once released, a port is handed out again
		release()
		delete(held, p)
		got, again, err := ReservePort()
		require.NoError(t, err)
		require.Equal(t, p, got)
		again()
		break
	}
	for _, release := range held {
		release()
	}
}

// threeFree reports whether ports p, p+1 and p+2 are neither locked by a
// test nor listened on.
func threeFree(p int) bool {
	for q := p; q < p+3; q++ {
		unlock, ok := lockPort(portLockPath(q))
		if !ok {
			return false
		}
		defer unlock()
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// fatalTB records a Fatalf and stops the caller with a panic the test
// recovers.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

// TestNodeThatDoesNotStartSaysWhy: a cluster node that cannot start fails
// the test with its own log (here: its client port is taken), not only
// "did not start".
func TestNodeThatDoesNotStartSaysWhy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	ft := &fatalTB{TB: t}
	c := &Cluster{t: ft, nodes: make([]*server.Server, 1), opts: []*server.Options{{
		ServerName: "busy-n0", Host: "127.0.0.1", Port: busy.Addr().(*net.TCPAddr).Port,
		JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	}}}
	func() {
		defer func() {
			if r := recover(); r != nil && r != ft {
				panic(r)
			}
		}()
		c.start(0)
	}()
	require.Contains(t, ft.msg, "did not start")
	require.Contains(t, ft.msg, "address already in use")
}
