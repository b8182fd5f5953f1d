package inbound_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// Items stored unroutable (here: the envelope lacked the type) are parked
// under _unrouted; once the operator fixes the envelope, a replay maps
// them again and they are written; _unrouted is unblocked.
func TestReplayReroutesUnroutedAfterTheEnvelopeIsFixed(t *testing.T) {
	e := newEnv(t, sqliteDB)
	e.bareCRM(t)
	fixed := *e.cfg.Sources[0].Envelope
	e.cfg.Sources[0].Envelope.Type = "" // .type: the bare records have none
	s, _ := e.start()
	for _, b := range []string{`[{"id":"42","status":"won"},{"id":"43","status":"new"}]`, `[{"id":"42","description":"d"}]`} {
		code, r := postBare(t, s, []byte(b), "crm-secret")
		require.Equal(t, 202, code)
		require.Equal(t, r.Accepted, r.Unreadable)
	}
	require.Eventually(t, func() bool { return lanesParked(s) == 3 }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, s.Stop(context.Background()))

	e.cfg.Sources[0].Envelope = &fixed
	s2, _ := e.start()
	admin, err := lane.OpenParked(context.Background(), e.js, e.names)
	require.NoError(t, err)
	res, err := admin.Replay(context.Background(), topology.StageInbound, "_unrouted", 10*time.Second, 3)
	require.NoError(t, err)
	require.True(t, res.Unblocked)
	require.Equal(t, 3, res.Republished)
	require.Eventually(t, func() bool { return s2.Stats().Applied == 3 }, 10*time.Second, 20*time.Millisecond, "%+v", s2.Stats())
	var status, desc string
	require.NoError(t, e.db.QueryRow("SELECT status, description FROM "+e.table("contacts")+" WHERE id = '42'").Scan(&status, &desc))
	require.Equal(t, "won", status)
	require.Equal(t, "d", desc)
}
