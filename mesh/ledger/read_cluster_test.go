package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

// On an R3 cluster a fresh ordered consumer can answer "no responders" or
// an empty batch for a moment; the audit's reads must still see every
// accepted event, or it would report delivered events as lost.
func TestSourceReadsEveryEventOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cl := meshtest.RunCluster(t, 3)
	_, js := meshtest.Connect(t, cl.URLs())
	cfg := meshtest.Topology(4)
	cfg.Replicas = 3
	names := topology.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, names.Ensure(ctx, js))
	const n = 300
	for i := range n {
		m := nats.NewMsg(names.EventSubject("order", fmt.Sprintf("k%d", i%30)))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("ev-%d", i))
		m.Data = []byte(fmt.Sprintf(`{"id":"ev-%d"}`, i))
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	src := &ledger.Source{JS: js, Names: names}
	for round := range 5 {
		evs, err := src.Events(ctx, ledger.Filter{}, time.Time{}, time.Time{})
		require.NoError(t, err, "round %d", round)
		require.Len(t, evs, n, "round %d: every accepted event", round)
		one, err := src.Events(ctx, ledger.Filter{Key: "k7"}, time.Time{}, time.Time{})
		require.NoError(t, err, "round %d", round)
		require.Len(t, one, n/30, "round %d: one key's events", round)
	}
}
