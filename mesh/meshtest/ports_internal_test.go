package meshtest

import (
	"fmt"
	"os"
	"testing"

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
