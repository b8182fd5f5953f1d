package dispatcher_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/dispatcher"
	"sluice.dev/mesh/crmreq"
)

// probing is a config whose lane pauses after a few failures for longer
// than any test waits, so that only a probe (every 50ms) resumes it.
func probing(url string) dispatcher.Config {
	cfg := fast(url)
	cfg.Pause = time.Minute
	cfg.StepAside = dispatcher.StepAsideConfig{Enabled: true, Backoff: []time.Duration{10 * time.Millisecond},
		CircuitFailures: 4, CircuitWindow: 6 * time.Second, ProbeEvery: 50 * time.Millisecond,
		InPlace: 2, InPlaceDelay: 5 * time.Millisecond}
	return cfg
}

// TestAProbeAnsweredIsNotSentAgain: a CRM that ignores Idempotency-Key is
// down until the lane has paused, then back. The lane's probe sends the
// failed request again and the CRM applies it; the lane uses that answer
// instead of sending the request a second time (a second record, a second
// note). A create that may already exist (uncertain) is looked up by the
// probe, never created blind.
func TestAProbeAnsweredIsNotSentAgain(t *testing.T) {
	sendReq := func() crmreq.Request { return request("acct:1", 1) }
	createReq := func() crmreq.Request {
		r := dealCreate(1)
		r.Find, r.ConflictIDFrom = nil, ""
		return r
	}
	tests := []struct {
		name string
		req  func() crmreq.Request
		// after: the calls the CRM got once it was back
		after string
		crmID string
	}{
		{"send", sendReq, "POST /events", ""},
		{"create without crm.find: the probe's create is the create", createReq, "POST /deals", "d-1"},
		{"uncertain create with crm.find: the probe looks it up, then creates", func() crmreq.Request { return dealCreate(1) },
			"GET /deals?external_id=deal%3A1, POST /deals", "d-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			// Writes fail until the CRM is back; reads work (the record was
			// never created). It comes back at the first request of a probe
			// once the lane has paused (none is half done then). after:
			// what it got once back.
			var back, up atomic.Bool
			var mu sync.Mutex
			var after []call
			first := strings.Fields(tc.after)[0]
			crm := newFakeCRM(t, func(c call, n int) reply {
				if back.Load() && c.Method == first {
					up.Store(true)
				}
				if up.Load() {
					mu.Lock()
					after = append(after, c)
					mu.Unlock()
				}
				switch {
				case c.Method == "GET":
					return reply{Status: 200, Body: `{"data":[]}`}
				case !up.Load():
					return reply{Status: 503, Body: `{"error":"down"}`}
				}
				return reply{Status: 201, Body: `{"id":"d-1"}`}
			})
			svc := e.start(t, probing(crm.srv.URL), zerolog.Nop())
			r := tc.req()
			e.publish(t, r)
			require.Eventually(t, func() bool { return e.paused(t, 0) }, 10*time.Second, 5*time.Millisecond,
				"the lane should pause")
			back.Store(true)
			require.Eventually(t, func() bool { return e.dispatchLeft(t) == 0 }, 10*time.Second, 5*time.Millisecond)
			mu.Lock()
			got := methods(after)
			mu.Unlock()
			require.Equal(t, tc.after, got, "requests once the CRM was back (%s in all)", methods(crm.Calls()))
			if tc.crmID != "" {
				m, err := dispatcher.OpenIDMap(context.Background(), e.js, e.names)
				require.NoError(t, err)
				got, found, err := m.Get(context.Background(), "deals", "deal:1")
				require.NoError(t, err)
				require.True(t, found)
				require.Equal(t, tc.crmID, got.CRMID)
			}
			require.Equal(t, uint64(1), svc.Stats().ProbeAnswers, "the lane used the probe's answer")
		})
	}
}

// TestAProbeWaitsForTheCRMsRetryAfter: a CRM enforcing a quota answers the
// paused lane's probe with 429 and Retry-After: 2; the next probe waits
// those 2 s instead of coming every probe_every (50ms here).
func TestAProbeWaitsForTheCRMsRetryAfter(t *testing.T) {
	e := newEnv(t, 1)
	var state atomic.Int32 // 0 down, 1 quota, 2 up
	var mu sync.Mutex
	var quota []time.Time // requests answered 429
	crm := newFakeCRM(t, func(c call, n int) reply {
		switch state.Load() {
		case 0:
			return reply{Status: 503}
		case 1:
			mu.Lock()
			quota = append(quota, c.At)
			mu.Unlock()
			return reply{Status: 429, Header: map[string]string{"Retry-After": "2"}}
		}
		return reply{Status: 200, Body: `{"ok":true}`}
	})
	e.start(t, probing(crm.srv.URL), zerolog.Nop())
	e.publish(t, request("acct:1", 1))
	require.Eventually(t, func() bool { return e.paused(t, 0) }, 10*time.Second, 5*time.Millisecond)
	state.Store(1)
	var got []time.Time
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = append([]time.Time(nil), quota...)
		return len(got) >= 2
	}, 10*time.Second, 5*time.Millisecond, "the probes should go on after the Retry-After")
	require.GreaterOrEqual(t, got[1].Sub(got[0]), 1900*time.Millisecond,
		"a probe came before the CRM's Retry-After had passed")
	state.Store(2)
	require.Eventually(t, func() bool { return e.dispatchLeft(t) == 0 }, 10*time.Second, 5*time.Millisecond)
}
