package watchdog

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"sluice.dev/mesh/topology"
)

// HistoryWindow is how far back the status page's chart reaches. The
// watchdog keeps one sample per poll for it, in memory.
const HistoryWindow = 15 * time.Minute

// historyMax caps the samples kept (a poll_interval far below 1s).
const historyMax = 3600

// dispatcherService is the dispatcher's micro service name, whose STATS
// (summed over its instances) give delivered and the CRM's answers.
const dispatcherService = "sluice-dispatcher"

// sample is what one poll saw; counters are cumulative.
type sample struct {
	at        time.Time
	accepted  uint64 // the events stream's last sequence
	delivered uint64 // CRM 2xx of every dispatcher instance since its start
	crm       map[string]uint64
	dispatch  bool // the dispatcher answered STATS
	lag       map[topology.Stage]uint64
	paused    int
}

// HistoryPoint is one point of GET /api/history: rates between two polls
// and the state at the second one.
type HistoryPoint struct {
	At time.Time `json:"at"`
	// AcceptedPerSec: events stored in the events stream per second.
	AcceptedPerSec float64 `json:"accepted_per_s"`
	// DeliveredPerSec: CRM 2xx answers per second (every dispatcher);
	// null when no dispatcher answered.
	DeliveredPerSec *float64 `json:"delivered_per_s"`
	// CRMPerSec: CRM answers per second by class: 2xx, 4xx, 5xx, and
	// "none" (timeouts, connection errors).
	CRMPerSec map[string]float64 `json:"crm_per_s"`
	// Lag: messages not yet acked per stage (pending + in flight).
	Lag map[topology.Stage]uint64 `json:"lag"`
	// PausedLanes: lanes paused at that poll.
	PausedLanes int `json:"paused_lanes"`
}

// History is the JSON of GET /api/history.
type History struct {
	At     time.Time      `json:"at"`
	Window string         `json:"window"`
	Points []HistoryPoint `json:"points"`
}

type history struct {
	mu      sync.Mutex
	samples []sample
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	cut := 0
	for cut < len(h.samples)-1 && s.at.Sub(h.samples[cut+1].at) > HistoryWindow {
		cut++ // keep one sample older than the window: the first rate
	}
	if n := len(h.samples) - historyMax; n > cut {
		cut = n
	}
	if cut > 0 {
		h.samples = append(h.samples[:0:0], h.samples[cut:]...)
	}
}

// points turns the samples into rates. A counter that went down (a
// restarted dispatcher) counts as 0 for that interval.
func (h *history) points() []HistoryPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HistoryPoint, 0, len(h.samples))
	for i := 1; i < len(h.samples); i++ {
		prev, cur := h.samples[i-1], h.samples[i]
		dt := cur.at.Sub(prev.at).Seconds()
		if dt <= 0 {
			continue
		}
		rate := func(a, b uint64) float64 {
			if b < a {
				return 0
			}
			return float64(b-a) / dt
		}
		p := HistoryPoint{At: cur.at.UTC(), AcceptedPerSec: rate(prev.accepted, cur.accepted),
			CRMPerSec: map[string]float64{}, Lag: cur.lag, PausedLanes: cur.paused}
		if cur.dispatch && prev.dispatch {
			d := rate(prev.delivered, cur.delivered)
			p.DeliveredPerSec = &d
			for class, n := range cur.crm {
				p.CRMPerSec[class] = rate(prev.crm[class], n)
			}
		}
		out = append(out, p)
	}
	return out
}

// statusClass groups a CRM status key of the dispatcher's stats ("200",
// "503", "timeout", "error") into 2xx, 3xx, 4xx, 5xx or none.
func statusClass(code string) string {
	if len(code) == 3 && code[0] >= '1' && code[0] <= '5' && code[1] >= '0' && code[1] <= '9' && code[2] >= '0' && code[2] <= '9' {
		return code[:1] + "xx"
	}
	return "none"
}

// dispatcherStats asks every dispatcher instance for its micro STATS and
// sums delivered and the CRM answers by class. ok is false when none
// answered within wait.
func (w *Watchdog) dispatcherStats(ctx context.Context, wait time.Duration) (delivered uint64, crm map[string]uint64, ok bool) {
	inbox := w.nc.NewRespInbox()
	sub, err := w.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, nil, false
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := w.nc.PublishRequest("$SRV.STATS."+dispatcherService, inbox, nil); err != nil {
		return 0, nil, false
	}
	crm = map[string]uint64{}
	seen := map[string]bool{}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		m, err := sub.NextMsg(left)
		if err != nil {
			break
		}
		var st struct {
			ID        string `json:"id"`
			Endpoints []struct {
				Data struct {
					Delivered   uint64            `json:"delivered"`
					CRMStatuses map[string]uint64 `json:"crm_statuses"`
				} `json:"data"`
			} `json:"endpoints"`
		}
		if json.Unmarshal(m.Data, &st) != nil || seen[st.ID] || len(st.Endpoints) == 0 {
			continue
		}
		seen[st.ID], ok = true, true
		d := st.Endpoints[0].Data
		delivered += d.Delivered
		for code, n := range d.CRMStatuses {
			crm[statusClass(code)] += n
		}
		// The others answer about as fast: wait a little more, not the
		// whole budget.
		if more := time.Now().Add(50 * time.Millisecond); more.Before(deadline) {
			deadline = more
		}
	}
	return delivered, crm, ok
}

// recordSample completes the poll's sample with the dispatchers' counters
// and keeps it.
func (w *Watchdog) recordSample(ctx context.Context, s *sample) {
	if s == nil {
		return
	}
	wait := min(250*time.Millisecond, w.cfg.PollInterval/4)
	s.delivered, s.crm, s.dispatch = w.dispatcherStats(ctx, wait)
	w.hist.add(*s)
}

func (p *Page) history(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, History{At: p.w.now().UTC(), Window: HistoryWindow.String(), Points: p.w.hist.points()})
}
