package meshtest

import (
	"fmt"
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
	ports := freePorts(t, 6)
	seen := map[int]bool{}
	for _, p := range ports {
		require.False(t, seen[p], "port %d twice", p)
		seen[p] = true
		require.GreaterOrEqual(t, p, lo)
		require.Less(t, p, ephemeral, "port %d is in the ephemeral range %d-%d", p, ephemeral, top)
	}
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
