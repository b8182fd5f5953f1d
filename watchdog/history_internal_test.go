package watchdog

import (
	"testing"
	"time"

	"sluice.dev/mesh/topology"
)

func TestHistoryRatesAndWindow(t *testing.T) {
	var h history
	t0 := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	lag := map[topology.Stage]uint64{topology.StageDispatcher: 7}
	h.add(sample{at: t0, accepted: 100, delivered: 50, dispatch: true, crm: map[string]uint64{"2xx": 50}, lag: lag})
	h.add(sample{at: t0.Add(5 * time.Second), accepted: 150, delivered: 60, dispatch: true,
		crm: map[string]uint64{"2xx": 60, "5xx": 5}, lag: lag, paused: 1})
	// A restarted dispatcher: its counter went down; that interval counts 0.
	h.add(sample{at: t0.Add(10 * time.Second), accepted: 150, delivered: 3, dispatch: true, crm: map[string]uint64{"2xx": 3}})
	// No dispatcher answered: no delivered rate.
	h.add(sample{at: t0.Add(15 * time.Second), accepted: 160})
	ps := h.points()
	if len(ps) != 3 {
		t.Fatalf("%d points, want 3", len(ps))
	}
	if ps[0].AcceptedPerSec != 10 || *ps[0].DeliveredPerSec != 2 || ps[0].CRMPerSec["5xx"] != 1 ||
		ps[0].CRMPerSec["2xx"] != 2 || ps[0].PausedLanes != 1 || ps[0].Lag[topology.StageDispatcher] != 7 {
		t.Errorf("first point %+v", ps[0])
	}
	if *ps[1].DeliveredPerSec != 0 || ps[1].AcceptedPerSec != 0 {
		t.Errorf("after a reset %+v", ps[1])
	}
	if ps[2].DeliveredPerSec != nil || ps[2].AcceptedPerSec != 2 {
		t.Errorf("without a dispatcher %+v", ps[2])
	}
	// Samples older than the window go, but the last one before it stays
	// (the first rate).
	h.add(sample{at: t0.Add(HistoryWindow + time.Minute), accepted: 200})
	if ps := h.points(); len(ps) != 1 || !ps[0].At.Equal(t0.Add(HistoryWindow+time.Minute)) {
		t.Errorf("after the window moved: %+v", ps)
	}
	for _, tc := range []struct{ code, class string }{{"200", "2xx"}, {"503", "5xx"}, {"422", "4xx"}, {"timeout", "none"}, {"error", "none"}, {"2000", "none"}} {
		if got := statusClass(tc.code); got != tc.class {
			t.Errorf("statusClass(%q) = %q, want %q", tc.code, got, tc.class)
		}
	}
}
