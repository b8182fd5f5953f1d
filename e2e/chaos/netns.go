package chaos

import (
	"fmt"
	"os/exec"
	"strings"
)

// The suite's network: a bridge in the root namespace and one network
// namespace per NATS node, joined to the bridge by a veth pair. Every name
// starts with namePrefix so .ci/chaos can remove leftovers of a run that was
// killed before its cleanup (see cleanupNetwork). Addresses are private to
// the bridge (subnet below); nothing else is routed or touched.
const (
	namePrefix = "slcx"
	bridgeName = namePrefix + "-br"
	// subnet is /24: the bridge is .1, node i (1-based) is .1i.
	subnet = "10.213.7"
)

// nodeNS is the namespace of node i (1-based).
func nodeNS(i int) string { return fmt.Sprintf("%s-n%d", namePrefix, i) }

// hostVeth is the root-namespace end of node i's veth pair (on the bridge):
// taking it down cuts the node off (see partition).
func hostVeth(i int) string { return fmt.Sprintf("%s-v%d", namePrefix, i) }

// nodeIP is node i's address inside its namespace.
func nodeIP(i int) string { return fmt.Sprintf("%s.1%d", subnet, i) }

// ipCmd runs `ip args...` and returns its error with the output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netnsAvailable reports whether `ip netns` works here (iproute2 installed,
// the kernel has network namespaces, we may create one).
func netnsAvailable() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the ip command (iproute2) is not installed: %w", err)
	}
	probe := namePrefix + "-probe"
	_ = ipCmd("netns", "del", probe)
	if err := ipCmd("netns", "add", probe); err != nil {
		return err
	}
	return ipCmd("netns", "del", probe)
}

// setupNetwork creates the bridge and n node namespaces. On error it removes
// what it made.
func setupNetwork(n int) (err error) {
	cleanupNetwork(n)
	defer func() {
		if err != nil {
			cleanupNetwork(n)
		}
	}()
	steps := [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", subnet + ".1/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	}
	for i := 1; i <= n; i++ {
		ns, host, peer := nodeNS(i), hostVeth(i), fmt.Sprintf("%s-p%d", namePrefix, i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", host, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", ns},
			[]string{"link", "set", host, "master", bridgeName},
			[]string{"link", "set", host, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "link", "set", peer, "name", "eth0"},
			[]string{"-n", ns, "addr", "add", nodeIP(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

// cleanupNetwork removes the namespaces (their veth ends go with them) and
// the bridge; missing ones are fine.
func cleanupNetwork(n int) {
	for i := 1; i <= n; i++ {
		_ = ipCmd("link", "del", hostVeth(i))
		_ = ipCmd("netns", "del", nodeNS(i))
	}
	_ = ipCmd("link", "del", bridgeName)
}

// partition cuts node i off the bridge (link down: its packets are dropped,
// TCP connections to it stall rather than reset, as in a real partition).
func partition(i int) error { return ipCmd("link", "set", hostVeth(i), "down") }

// heal puts node i back on the bridge.
func heal(i int) error { return ipCmd("link", "set", hostVeth(i), "up") }
