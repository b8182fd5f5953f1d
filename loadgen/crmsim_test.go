package loadgen_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
	"sluice.dev/loadgen"
)

// TestPlanIDsFitTheSimulatorChecks sends a plan to the CRM simulator the
// way the dispatcher does (one request per event, Sluice headers) and
// checks that both of the simulator's checks understand the ids.
func TestPlanIDsFitTheSimulatorChecks(t *testing.T) {
	p := plan(t, loadgen.PlanConfig{Events: 1000, Seed: 4})
	sim, err := crmsim.New(crmsim.Config{}, zerolog.Nop())
	require.NoError(t, err)
	send := func(skip string) {
		for _, ev := range p.Events {
			if ev.ID == skip {
				continue
			}
			r := httptest.NewRequest("POST", "/api/things", strings.NewReader(string(ev.Data)))
			r.Header.Set("Idempotency-Key", ev.ID)
			r.Header.Set("X-Sluice-Event-Id", ev.ID)
			r.Header.Set("X-Sluice-Key", ev.Key)
			r.Header.Set("X-Sluice-Type", ev.Type)
			r.Header.Set("X-Sluice-Occurred-At", ev.OccurredAt.Format(time.RFC3339Nano))
			w := httptest.NewRecorder()
			sim.Handler().ServeHTTP(w, r)
			require.Equal(t, http.StatusCreated, w.Code)
		}
	}
	send("")
	rep := sim.Check(p.Expected())
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 1000, rep.Totals.Delivered)
	self := sim.SelfCheck()
	require.True(t, self.OK(), self.String())
	require.Equal(t, len(p.Keys()), self.Totals.Keys)

	// one event lost in the middle of its key: both checks see it
	var lost string
	for _, ids := range p.Expected() {
		if len(ids) >= 3 {
			lost = ids[1]
			break
		}
	}
	sim.Reset()
	send(lost)
	rep = sim.Check(p.Expected())
	require.False(t, rep.OK())
	require.Equal(t, 1, rep.Totals.Missing)
	self = sim.SelfCheck()
	require.False(t, self.OK())
	require.Equal(t, 1, self.Totals.Missing)
	require.Equal(t, []string{lost}, self.Keys[0].Missing)
}
