package topology_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// Every registered stage is complete: the lists of stages (status, parked,
// metrics, partitions, watchdog, repartitioning, run wiring) rely on it.
func TestStageSpecsAreComplete(t *testing.T) {
	names := topology.New(topology.Config{Partitions: 8})
	seen := map[topology.Stage]bool{}
	for _, s := range topology.StageSpecs() {
		require.NotEmpty(t, s.Name)
		require.True(t, strings.HasPrefix(s.Service, "sluice-"), s.Name)
		require.False(t, seen[s.Name], "stage %s registered twice", s.Name)
		seen[s.Name] = true
		require.NotNil(t, s.Stream, s.Name)
		require.NotNil(t, s.StreamConfig, s.Name)
		require.NotNil(t, s.Filter, s.Name)
		require.NotNil(t, s.Subject, s.Name)
		require.NotNil(t, s.Replay, s.Name)
		require.NotNil(t, s.Ensure, s.Name)
		require.NoError(t, s.Retry.Validate(string(s.Name)+".retry"))
		require.Equal(t, s.Stream(names), s.StreamConfig(names).Name, s.Name)
		require.True(t, (s.Intake == "") != (s.Follows == ""), "%s: exactly one of Intake and Follows", s.Name)
		if s.Follows != "" {
			_, ok := topology.SpecOf(s.Follows)
			require.True(t, ok, "%s follows unknown stage %s", s.Name, s.Follows)
		}
		// A message stored for partition p is inside the partition's filter.
		subj := s.Subject(names, 3, "order", "k1")
		filter := s.Filter(names, 3)
		require.True(t, strings.HasPrefix(subj, strings.TrimSuffix(filter, ">")), "%s: %s not under %s", s.Name, subj, filter)
		require.True(t, topology.IsLaneConsumer(names.ConsumerName(s.Name, 3)))
		stream, f := names.StageFilter(s.Name, 3)
		require.Equal(t, s.Stream(names), stream)
		require.Equal(t, filter, f)
		// Only a work queue's lane consumer keeps its state in memory: the
		// stream is its position. Elsewhere a lost consumer state would
		// send the history since the lane's fence again.
		require.Equal(t, s.StreamConfig(names).Retention == jetstream.WorkQueuePolicy, s.WorkQueue, s.Name)
		require.Equal(t, s.WorkQueue, names.LaneConsumerConfig(s.Name, 3, filter).MemoryStorage, s.Name)
	}
	require.Equal(t, len(seen), len(topology.Stages()))
	require.False(t, topology.IsLaneConsumer("someone-else-001"))
}
