package e2e_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
)

// TestAReplayedRequestIsRetriedInPlaceLonger: a request that stepped
// aside and fails again when its key's round replays it is tried
// step_aside.round_in_place more times in place (5ms apart, the message in
// hand) before it steps aside again. Stepping aside in a round parks the
// rest of the round behind it once more; under a CRM failing 30 % of
// requests rounds of dozens of events broke every few dozen. The victims
// below fail 6 times: 3 tries step aside, then the round's first request
// fails 3 more. With the shipped round_in_place (3) each victim holds its
// key once and no lane pauses (a replayed request's extra tries pass
// retry.tries, which must not pause the partition); with 0 they hold
// their keys again (and their rounds, replayed together, may run 8
// failures in a row into the circuit). Every event arrives, in order per
// key.
func TestAReplayedRequestIsRetriedInPlaceLonger(t *testing.T) {
	for _, tc := range []struct {
		name         string
		roundInPlace int
		heldAgain    bool // the rounds' failures step aside again (and may run into the circuit)
	}{
		{"shipped round_in_place: one hold", dispatcher.DefaultRoundInPlace, false},
		{"round_in_place 0: held again", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := stepAsideConfig()
			cfg.StepAside.InPlace = dispatcher.DefaultInPlace
			cfg.StepAside.RoundInPlace = tc.roundInPlace
			h := newOnePartitionHarness(t, cfg)

			const fails = 6
			p := plan(t, 300, 100, 37)
			victims := map[string]bool{}
			seen := map[string]bool{}
			last := -100
			for i, e := range p.Events {
				// Victims apart, so that their failures do not run together
				// into the partition's circuit (8 in a row).
				if !seen[e.Key] && len(victims) < 4 && i-last >= 20 {
					victims[e.ID] = true
					h.Sim.RejectTimes(e.ID, http.StatusServiceUnavailable, fails)
					last = i
				}
				seen[e.Key] = true
			}
			require.Len(t, victims, 4)
			<-publishAsync(t, h, p)
			rep := waitDelivered(t, h, p, 60*time.Second)
			requireInOrder(t, rep)

			for id := range victims {
				var st []int
				for _, r := range h.Sim.Records() {
					if r.ID() == id {
						st = append(st, r.Status/100)
					}
				}
				require.GreaterOrEqual(t, len(st), fails+1, "event %s: %v", id, st)
				require.Equal(t, 2, st[fails], "event %s: %v", id, st)
			}
			var held, pauses uint64
			for _, l := range h.Dispatcher().Stats().Lanes {
				held += l.Held
				pauses += l.Pauses
			}
			if tc.heldAgain {
				require.Greater(t, held, uint64(len(victims)), "keys stepped aside")
			} else {
				require.Equal(t, uint64(len(victims)), held, "keys stepped aside")
				require.Zero(t, pauses, "a lane paused")
			}
			requireNoKeyHeld(t, h)
			requireNothingParked(t, h)
		})
	}
}
