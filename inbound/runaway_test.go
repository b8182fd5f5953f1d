package inbound_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// A runaway jq expression in an inbound type (here a column that counts to
// 10^15) is cut off by inbound.query_timeout and the item parked with the
// reason; the lane goes on with the next item instead of holding forever
// while its heartbeats make it look busy.
func TestRunawayJQIsCutOffAndParked(t *testing.T) {
	e := newEnv(t, sqliteDB)
	s, _ := e.start(func(c *inbound.Config, _ *inbound.Deps) {
		c.QueryTimeout = 300 * time.Millisecond
		c.Types = maps.Clone(c.Types)
		nt := c.Types["note_added"]
		nt.Write.Columns = maps.Clone(nt.Write.Columns)
		nt.Write.Columns["body"] = `if .data.body == "spin" then last(range(1e15)) | tostring else .data.body end`
		c.Types["note_added"] = nt
	})
	start := time.Now()
	code, _ := post(t, s, "d-spin", mustJSON(noteItem("spin", 2, "spin")))
	require.Equal(t, 202, code)
	code, _ = post(t, s, "d-ok", mustJSON(noteItem("after", 2, "the lane goes on")))
	require.Equal(t, 202, code)

	ctx := context.Background()
	ps, err := e.js.Stream(ctx, e.names.ParkedStream())
	require.NoError(t, err)
	subject := e.names.ParkedSubject(topology.StageInbound, "note_added", topology.KeyToken("lead:2"))
	require.Eventually(t, func() bool {
		_, err := ps.GetLastMsgForSubject(ctx, subject)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the runaway item is parked")
	pm, err := ps.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject)) // the first one parked
	require.NoError(t, err)
	require.Equal(t, "mapping failed", pm.Header.Get(lane.HeaderParkReason))
	require.Contains(t, pm.Header.Get(lane.HeaderParkError), "deadline exceeded")
	require.JSONEq(t, string(mustJSON(noteItem("spin", 2, "spin"))), string(pm.Data))
	require.Less(t, time.Since(start), 15*time.Second, "cut off, not run to the end")
	require.Equal(t, uint64(1), s.Stats().Parked)
	// The lane went on: with the default on_invalid (skip) the entity's
	// next note is written.
	require.Eventually(t, func() bool { return e.count("lead_notes", "") == 1 }, 20*time.Second, 20*time.Millisecond)
	info, err := ps.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
}
