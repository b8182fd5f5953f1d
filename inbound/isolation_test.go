package inbound_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// An invalid webhook parks its entity: the entity's later webhooks wait
// behind it (parked in order, not applied), other entities go on.
func TestInvalidWebhookIsolatesItsEntity(t *testing.T) {
	e := newEnv(t, allDBs[0]) // SQLite
	s, _ := e.start()
	now := time.Now()
	bad := statusItem("iso-bad", 1, "won", now, actor("user", "a"))
	bad["data"].(map[string]any)["status"] = "bogus"
	for _, it := range []map[string]any{bad, noteItem("isobehind", 1, "waits"), noteItem("isoother", 2, "flows")} {
		code, _ := post(t, s, "d-"+it["id"].(string), mustJSON(it))
		require.Equal(t, 202, code)
	}
	e.settled(1)
	require.Equal(t, 0, e.count("lead_notes", "lead_id = "+e.ph(), 1), "lead 1's note waits behind the invalid webhook")
	require.Equal(t, 1, e.count("lead_notes", "lead_id = "+e.ph(), 2))

	ctx := context.Background()
	ps, err := e.js.Stream(ctx, e.names.ParkedStream())
	require.NoError(t, err)
	var reason string
	require.Eventually(t, func() bool {
		pm, err := ps.GetLastMsgForSubject(ctx, e.names.ParkedSubject(topology.StageInbound, "note_added", topology.KeyToken("lead:1")))
		if err != nil {
			return false
		}
		reason = pm.Header.Get(lane.HeaderParkReason)
		return true
	}, 10*time.Second, 20*time.Millisecond)
	require.True(t, strings.HasPrefix(reason, "behind parked event"), reason)
}
