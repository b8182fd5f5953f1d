package meshtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/meshtest"
)

// An R3 stream on the test cluster survives the loss of its leader: a new
// leader is elected among the other nodes, nothing stored is lost, and the
// killed node comes back on the same ports and store.
func TestClusterStreamSurvivesLeaderKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := meshtest.RunCluster(t, 3)
	require.Len(t, c.Servers(), 3)
	_, js := meshtest.Connect(t, c.URLs())

	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"},
		Replicas: 3, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	for i := range 100 {
		_, err := js.Publish(ctx, "r3.x", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}

	leader, err := c.StreamLeader(ctx, js, "R3")
	require.NoError(t, err)
	require.GreaterOrEqual(t, leader, 0)
	c.Kill(leader)
	require.Nil(t, c.Servers()[leader])

	var next int
	require.Eventually(t, func() bool {
		cctx, ccancel := context.WithTimeout(ctx, time.Second) // a request to a dead leader gets no answer
		defer ccancel()
		next, err = c.StreamLeader(cctx, js, "R3")
		return err == nil && next >= 0 && next != leader
	}, 20*time.Second, 50*time.Millisecond, "no new stream leader")
	_, err = js.Publish(ctx, "r3.x", []byte("after"))
	require.NoError(t, err)

	c.Restart(leader)
	require.NotNil(t, c.Servers()[leader])
	s, err := js.Stream(ctx, "R3")
	require.NoError(t, err)
	require.EqualValues(t, 101, s.CachedInfo().State.Msgs)
	require.Eventually(t, func() bool {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		defer ccancel()
		s, err := js.Stream(cctx, "R3")
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		cur := 0
		for _, r := range s.CachedInfo().Cluster.Replicas {
			if r.Current {
				cur++
			}
		}
		return cur == 2
	}, 20*time.Second, 50*time.Millisecond, "restarted node did not catch up")
}
