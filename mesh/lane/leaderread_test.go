package lane_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/topology"
)

// Every parked-key decision reads the bucket's stream leader, never a
// direct get (which any replica answers; a lagging follower let a held
// key's next event overtake it in the chaos suite). A spy on both API
// subjects counts the reads of one park, behind-park and replay.
func TestParkedKeyDecisionsReadTheLeader(t *testing.T) {
	f := newIsoFixture(t)
	spy, err := nats.Connect(f.js.Conn().ConnectedUrl())
	require.NoError(t, err)
	t.Cleanup(spy.Close)
	stream := "KV_" + f.names.ParkedKeysBucket()
	var direct, leader atomic.Int64
	for subj, n := range map[string]*atomic.Int64{
		"$JS.API.DIRECT.GET." + stream:        &direct,
		"$JS.API.DIRECT.GET." + stream + ".>": &direct,
		"$JS.API.STREAM.MSG.GET." + stream:    &leader,
	} {
		_, err := spy.Subscribe(subj, func(*nats.Msg) { n.Add(1) })
		require.NoError(t, err)
	}
	require.NoError(t, spy.Flush())

	f.setReject("k-0", true)
	f.publish("k", 0, 3)
	f.waitParked("k", 3)
	f.setReject("k-0", false)
	_, err = f.admin.Replay(context.Background(), topology.StageEnricher, "k", 10*time.Second, 3)
	require.NoError(t, err)
	f.waitSeen("k", "k-0", "k-1", "k-2")

	require.NoError(t, spy.Flush())
	require.Zero(t, direct.Load(), "parked-key reads through direct gets (any replica, possibly stale)")
	require.Positive(t, leader.Load(), "no parked-key read seen at all")
}
