package inbound_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// An invalid webhook and its entity, per the type's on_invalid: "skip"
// (default) parks the item alone and the entity's later items are applied;
// "isolate" parks the entity's later items behind it (in order, not
// applied) until an operator replays or discards the key. Other entities
// go on either way.
func TestInvalidWebhookAndItsEntity(t *testing.T) {
	for _, tc := range []struct {
		onInvalid   string
		notesLead1  int
		behindFirst bool
	}{
		{"", 1, false}, // the default is skip
		{inbound.OnInvalidSkip, 1, false},
		{inbound.OnInvalidIsolate, 0, true},
	} {
		t.Run("on_invalid="+tc.onInvalid, func(t *testing.T) {
			e := newEnv(t, allDBs[0]) // SQLite
			for _, n := range []string{"lead_status_changed", "note_added"} {
				typ := e.cfg.Types[n]
				typ.OnInvalid = tc.onInvalid
				e.cfg.Types[n] = typ
			}
			s, _ := e.start()
			now := time.Now()
			bad := statusItem("iso-bad", 1, "won", now, actor("user", "a"))
			bad["data"].(map[string]any)["status"] = "bogus"
			for _, it := range []map[string]any{bad, noteItem("isobehind", 1, "after"), noteItem("isoother", 2, "flows")} {
				code, _ := post(t, s, "d-"+it["id"].(string), mustJSON(it))
				require.Equal(t, 202, code)
			}
			e.settled(1 + tc.notesLead1)
			require.Equal(t, tc.notesLead1, e.count("lead_notes", "lead_id = "+e.ph(), 1), "lead 1's later note")
			require.Equal(t, 1, e.count("lead_notes", "lead_id = "+e.ph(), 2))

			ctx := context.Background()
			ps, err := e.js.Stream(ctx, e.names.ParkedStream())
			require.NoError(t, err)
			var reason string
			require.Eventually(t, func() bool {
				pm, err := ps.GetLastMsgForSubject(ctx, e.names.ParkedSubject(topology.StageInbound, "lead_status_changed", topology.KeyToken("lead:1")))
				if err != nil {
					return false
				}
				reason = pm.Header.Get(lane.HeaderParkReason)
				return true
			}, 10*time.Second, 20*time.Millisecond)
			require.Equal(t, "invalid webhook", reason)
			if tc.behindFirst {
				require.Eventually(t, func() bool {
					pm, err := ps.GetLastMsgForSubject(ctx, e.names.ParkedSubject(topology.StageInbound, "note_added", topology.KeyToken("lead:1")))
					return err == nil && strings.HasPrefix(pm.Header.Get(lane.HeaderParkReason), "behind parked event")
				}, 10*time.Second, 20*time.Millisecond)
			} else {
				_, err := ps.GetLastMsgForSubject(ctx, e.names.ParkedSubject(topology.StageInbound, "note_added", topology.KeyToken("lead:1")))
				require.Error(t, err, "nothing is parked behind a skipped item")
			}
		})
	}
}
