package lane

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// Every member computes the same assignment from the same view; it covers
// every partition and gives each of k members at most ceil(N/k).
func TestAssignLanesBalancedAndDeterministic(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{8, 1}, {8, 2}, {8, 3}, {16, 2}, {16, 5}, {3, 4}} {
		t.Run(fmt.Sprintf("%dx%d", tc.n, tc.k), func(t *testing.T) {
			members := map[string][]int{}
			for i := range tc.k {
				members[fmt.Sprintf("m%02d-%x", i, i*7919)] = nil
			}
			owner := assignLanes(topology.StageEnricher, tc.n, members)
			require.Len(t, owner, tc.n)
			require.Equal(t, owner, assignLanes(topology.StageEnricher, tc.n, members))
			load := map[string]int{}
			for _, id := range owner {
				load[id]++
			}
			capacity := (tc.n + tc.k - 1) / tc.k // n/k, or one more
			for id, n := range load {
				require.LessOrEqual(t, n, capacity, id)
				require.GreaterOrEqual(t, n, tc.n/tc.k, id)
			}
			require.Len(t, load, min(tc.n, tc.k), "every member holds a lane when there are enough")
		})
	}
}

// A member that runs only some partitions is assigned only those.
func TestAssignLanesHonoursPartitionsRun(t *testing.T) {
	owner := assignLanes(topology.StageDispatcher, 4, map[string][]int{"a": {0, 1}, "b": nil})
	for p, id := range owner {
		if p >= 2 {
			require.Equal(t, "b", id, "partition %d", p)
		}
	}
	require.Len(t, owner, 4)
}
