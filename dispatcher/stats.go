package dispatcher

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"sluice.dev/mesh/lane"
)

// Stats is the dispatcher's progress, served by the micro service's STATS
// verb and the <prefix>.dispatcher.status endpoint.
type Stats struct {
	// Lanes are the runner's per-partition stats (last ack, retries, pauses,
	// parked).
	Lanes []lane.Stats `json:"lanes"`
	// Delivered counts requests the CRM accepted (2xx) since start.
	Delivered uint64 `json:"delivered"`
	// CRMStatuses counts CRM answers by status code ("200", "503"), plus
	// "timeout" and "error" for requests that got no answer.
	CRMStatuses map[string]uint64 `json:"crm_statuses"`
	// Latency is produce→CRM latency (CRM 2xx time minus accepted_at) over
	// the last deliveries.
	Latency Latency `json:"latency"`
	// Finds counts crm.find lookups sent, Found those that found a record,
	// Adopted the records taken over (found or named by a conflict),
	// AdoptedConflicts those named by a 409/422 (crm.conflict_id_from).
	Finds            uint64 `json:"finds"`
	Found            uint64 `json:"found"`
	Adopted          uint64 `json:"adopted"`
	AdoptedConflicts uint64 `json:"adopted_conflicts"`
	// ProbeAnswers counts requests a paused lane's probe had sent and the
	// CRM applied (2xx): the lane used that answer instead of sending the
	// request a second time.
	ProbeAnswers uint64 `json:"probe_answers,omitempty"`
	// TokenFetches counts OAuth2 tokens fetched, Unauthorized the CRM's
	// 401 answers (each replaces the token once).
	TokenFetches uint64 `json:"token_fetches,omitempty"`
	Unauthorized uint64 `json:"unauthorized,omitempty"`
	// Throttled counts the CRM's 429 answers seen by the rate limiter;
	// Rate is its current rate (requests/s; below crm.rate_limit.rps
	// after a 429, climbing back with each 2xx).
	Throttled uint64  `json:"throttled,omitempty"`
	Rate      float64 `json:"rate,omitempty"`
}

// Latency summarises the last latencySamples produce→CRM latencies.
type Latency struct {
	Samples int           `json:"samples"`
	Last    time.Duration `json:"last_ns"`
	P50     time.Duration `json:"p50_ns"`
	P90     time.Duration `json:"p90_ns"`
	P99     time.Duration `json:"p99_ns"`
}

const latencySamples = 1024

type metrics struct {
	delivered atomic.Uint64

	mu       sync.Mutex
	statuses map[string]uint64
	ring     [latencySamples]time.Duration
	n, next  int
	last     time.Duration
}

func (m *metrics) status(r response) {
	k := strconv.Itoa(r.Status)
	switch {
	case r.Status == 0 && r.Timeout:
		k = "timeout"
	case r.Status == 0:
		k = "error"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.statuses == nil {
		m.statuses = map[string]uint64{}
	}
	m.statuses[k]++
}

// deliveredOne counts a delivery and returns its produce→CRM latency (ok
// false when the request carried no accepted_at).
func (m *metrics) deliveredOne(accepted time.Time) (time.Duration, bool) {
	m.delivered.Add(1)
	if accepted.IsZero() {
		return 0, false
	}
	d := time.Since(accepted)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = d
	m.ring[m.next] = d
	m.next = (m.next + 1) % latencySamples
	m.n = min(m.n+1, latencySamples)
	return d, true
}

func (m *metrics) snapshot() Stats {
	m.mu.Lock()
	st := Stats{Delivered: m.delivered.Load(), CRMStatuses: make(map[string]uint64, len(m.statuses))}
	for k, v := range m.statuses {
		st.CRMStatuses[k] = v
	}
	s := slices.Clone(m.ring[:m.n])
	l := Latency{Samples: m.n, Last: m.last}
	m.mu.Unlock()
	if len(s) > 0 {
		slices.Sort(s)
		at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
		l.P50, l.P90, l.P99 = at(0.50), at(0.90), at(0.99)
	}
	st.Latency = l
	return st
}
