package crmsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
)

func newSim(t *testing.T, cfg crmsim.Config) *crmsim.Sim {
	t.Helper()
	s, err := crmsim.New(cfg, zerolog.Nop())
	require.NoError(t, err)
	return s
}

// req is one request and the answer expected.
type req struct {
	method, path string
	hdr          map[string]string
	status       int
	body         string // exact body; "" skips the check
	before       func(*crmsim.Sim)
}

func do(t *testing.T, h http.Handler, r req) *httptest.ResponseRecorder {
	t.Helper()
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(`{"name":"Asha"}`))
	for k, v := range r.hdr {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

func TestCRMBehaviour(t *testing.T) {
	idem := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }
	ev := func(id string) map[string]string { return map[string]string{"X-Sluice-Event-Id": id} }
	cases := []struct {
		name string
		cfg  crmsim.Config
		reqs []req
	}{
		{"create numbers per object", crmsim.Config{}, []req{
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-1"}`},
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-2"}`},
			{method: "POST", path: "/api/deals", status: 201, body: `{"id":"deals-1"}`},
		}},
		{"repeated idempotency key returns the same id", crmsim.Config{}, []req{
			{method: "POST", path: "/api/contacts", hdr: idem("k1"), status: 201, body: `{"id":"contacts-1"}`},
			{method: "POST", path: "/api/contacts", hdr: idem("k2"), status: 201, body: `{"id":"contacts-2"}`},
			{method: "POST", path: "/api/contacts", hdr: idem("k1"), status: 200, body: `{"id":"contacts-1"}`},
		}},
		{"update needs a created id", crmsim.Config{}, []req{
			{method: "PATCH", path: "/api/contacts/contacts-1", status: 404, body: `{"error":"not found"}`},
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-1"}`},
			{method: "PATCH", path: "/api/contacts/contacts-1", status: 200, body: `{"id":"contacts-1"}`},
			{method: "PUT", path: "/api/contacts/contacts-1", status: 200, body: `{"id":"contacts-1"}`},
			{method: "PUT", path: "/api/contacts/contacts-2", status: 404},
		}},
		{"anything else is 200 {}", crmsim.Config{}, []req{
			{method: "GET", path: "/api/contacts/contacts-1", status: 200, body: `{}`},
			{method: "POST", path: "/api/contacts/contacts-1/notes", status: 200, body: `{}`},
			{method: "POST", path: "/hooks/lead", status: 200, body: `{}`},
			{method: "DELETE", path: "/api/contacts/x", status: 200, body: `{}`},
			{method: "POST", path: "/api/", status: 200, body: `{}`},
		}},
		{"injected 503 changes nothing", crmsim.Config{ErrorRate: 1, RetryAfter: "2"}, []req{
			{method: "POST", path: "/api/contacts", hdr: idem("k1"), status: 503},
			{method: "POST", path: "/api/contacts", hdr: idem("k1"), status: 201, body: `{"id":"contacts-1"}`,
				before: func(s *crmsim.Sim) { s.SetErrorRate(0) }},
		}},
		{"outage then recovery", crmsim.Config{}, []req{
			{method: "POST", path: "/api/contacts", status: 503, before: func(s *crmsim.Sim) { s.Outage(time.Hour) }},
			{method: "PATCH", path: "/api/contacts/contacts-1", status: 503},
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-1"}`,
				before: func(s *crmsim.Sim) { s.Outage(0) }},
		}},
		{"reject by event id, before applying", crmsim.Config{Reject: map[string]int{"e1": 422}}, []req{
			{method: "POST", path: "/api/contacts", hdr: ev("e1"), status: 422, body: `{"error":"rejected"}`},
			{method: "POST", path: "/api/contacts", hdr: ev("e2"), status: 201, body: `{"id":"contacts-1"}`},
			{method: "POST", path: "/api/contacts", hdr: ev("e3"), status: 409, before: func(s *crmsim.Sim) { s.Reject("e3", 409) }},
			{method: "POST", path: "/api/contacts", hdr: ev("e3"), status: 201, body: `{"id":"contacts-2"}`,
				before: func(s *crmsim.Sim) { s.Reject("e3", 0) }},
		}},
		{"reject a given number of times", crmsim.Config{}, []req{
			{method: "POST", path: "/api/contacts", hdr: ev("e1"), status: 503, before: func(s *crmsim.Sim) { s.RejectTimes("e1", 503, 2) }},
			{method: "POST", path: "/api/contacts", hdr: ev("e2"), status: 201, body: `{"id":"contacts-1"}`},
			{method: "POST", path: "/api/contacts", hdr: ev("e1"), status: 503},
			{method: "POST", path: "/api/contacts", hdr: ev("e1"), status: 201, body: `{"id":"contacts-2"}`},
			{method: "POST", path: "/api/contacts", hdr: ev("e1"), status: 201, body: `{"id":"contacts-3"}`},
		}},
		{"reset forgets objects and restores config", crmsim.Config{}, []req{
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-1"}`},
			{method: "POST", path: "/api/contacts", status: 503, before: func(s *crmsim.Sim) { s.SetErrorRate(1) }},
			{method: "PATCH", path: "/api/contacts/contacts-1", status: 404, before: func(s *crmsim.Sim) { s.Reset() }},
			{method: "POST", path: "/api/contacts", status: 201, body: `{"id":"contacts-1"}`},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg)
			for i, r := range tc.reqs {
				if r.before != nil {
					r.before(s)
				}
				w := do(t, s.Handler(), r)
				require.Equal(t, r.status, w.Code, "request %d %s %s: %s", i, r.method, r.path, w.Body)
				require.Equal(t, "application/json", w.Header().Get("Content-Type"))
				if r.body != "" {
					require.JSONEq(t, r.body, w.Body.String(), "request %d", i)
				}
				if w.Code == 503 {
					require.Equal(t, tc.cfg.RetryAfter, w.Header().Get("Retry-After"))
				}
			}
		})
	}
}

func TestRecordsEveryRequest(t *testing.T) {
	s := newSim(t, crmsim.Config{})
	hdr := map[string]string{
		"Idempotency-Key": "customer:1#1", "X-Sluice-Key": "customer:1", "X-Sluice-Event-Id": "customer:1#1",
		"X-Sluice-Type": "customer_signed_up", "X-Sluice-Occurred-At": "2026-01-05T09:00:00Z",
	}
	before := time.Now()
	do(t, s.Handler(), req{method: "POST", path: "/api/contacts?x=1", hdr: hdr})
	s.Outage(time.Hour)
	do(t, s.Handler(), req{method: "POST", path: "/api/contacts", hdr: hdr})
	s.Outage(0)
	do(t, s.Handler(), req{method: "POST", path: "/api/contacts", hdr: hdr})
	do(t, s.Handler(), req{method: "GET", path: "/_sim/stats"}) // control: not recorded

	recs := s.Records()
	require.Len(t, recs, 3)
	r := recs[0]
	require.Equal(t, 0, r.Index)
	require.False(t, r.At.Before(before))
	require.Equal(t, "POST", r.Method)
	require.Equal(t, "/api/contacts", r.Path)
	require.Equal(t, 201, r.Status)
	require.Equal(t, "contacts-1", r.CRMID)
	require.Equal(t, "customer:1#1", r.IdempotencyKey)
	require.Equal(t, "customer:1", r.Key)
	require.Equal(t, "customer:1#1", r.EventID)
	require.Equal(t, "customer_signed_up", r.Type)
	require.Equal(t, "2026-01-05T09:00:00Z", r.OccurredAt)
	require.EqualValues(t, len(`{"name":"Asha"}`), r.BodySize)
	require.Equal(t, crmsim.FaultOutage, recs[1].Fault)
	require.Equal(t, 503, recs[1].Status)
	require.Equal(t, 200, recs[2].Status)
	require.Equal(t, "contacts-1", recs[2].CRMID)
	require.Equal(t, 3, s.Attempts())
	require.Equal(t, 2, s.Delivered())
	require.Len(t, s.RecordsSince(2), 1)
	require.Empty(t, s.RecordsSince(3))

	st := s.Stats()
	require.Equal(t, map[int]int{200: 1, 201: 1, 503: 1}, st.Status)
	require.Equal(t, 1, st.Duplicates)
	require.Equal(t, 1, st.IdempotentReplays)
	require.Equal(t, 1, st.Injected)
	require.Equal(t, 2, sum(st.PerSecond))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func TestRecordsGrowPastCapacity(t *testing.T) {
	s := newSim(t, crmsim.Config{RecordCapacity: 1})
	const n = 20000 // more than one chunk
	for i := range n {
		do(t, s.Handler(), req{method: "POST", path: "/x", hdr: map[string]string{"X-Sluice-Event-Id": fmt.Sprint(i)}})
	}
	recs := s.Records()
	require.Len(t, recs, n)
	for i, r := range recs {
		require.Equal(t, i, r.Index)
		require.Equal(t, fmt.Sprint(i), r.EventID)
	}
}

func TestErrorRateIsSeededAndRoughlyRight(t *testing.T) {
	statuses := func(seed int64) []int {
		s := newSim(t, crmsim.Config{ErrorRate: 0.3, Seed: seed})
		var out []int
		for range 2000 {
			out = append(out, do(t, s.Handler(), req{method: "POST", path: "/api/x"}).Code)
		}
		return out
	}
	a, b, c := statuses(7), statuses(7), statuses(8)
	require.Equal(t, a, b, "same seed, same failures")
	require.NotEqual(t, a, c)
	fails := 0
	for _, st := range a {
		if st == 503 {
			fails++
		}
	}
	require.InDelta(t, 600, fails, 90)
}

func TestLatency(t *testing.T) {
	s := newSim(t, crmsim.Config{})
	s.SetLatency(100*time.Millisecond, 20*time.Millisecond)
	t0 := time.Now()
	do(t, s.Handler(), req{method: "POST", path: "/api/x"})
	require.GreaterOrEqual(t, time.Since(t0), 100*time.Millisecond)
	s.SetLatency(0, 0)
	t0 = time.Now()
	do(t, s.Handler(), req{method: "POST", path: "/api/x"})
	require.Less(t, time.Since(t0), 100*time.Millisecond)
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		cfg  crmsim.Config
		want string
	}{
		{crmsim.Config{ErrorRate: 1.5}, "simulator.error_rate"},
		{crmsim.Config{ErrorRate: -0.1}, "simulator.error_rate"},
		{crmsim.Config{Latency: -time.Second}, "simulator.latency"},
		{crmsim.Config{Jitter: -time.Second}, "simulator.jitter"},
		{crmsim.Config{Addr: "nope"}, "simulator.addr"},
		{crmsim.Config{Reject: map[string]int{"a": 200}}, `simulator.reject["a"]`},
		{crmsim.Config{RecordCapacity: -1}, "simulator.record_capacity"},
	}
	for _, tc := range cases {
		err := tc.cfg.WithDefaults().Validate()
		require.ErrorContains(t, err, tc.want)
		_, err = crmsim.New(tc.cfg, zerolog.Nop())
		require.Error(t, err)
	}
	require.NoError(t, crmsim.Config{}.WithDefaults().Validate())
	require.Equal(t, "127.0.0.1:0", crmsim.Config{}.WithDefaults().Addr)
}

func TestStartStop(t *testing.T) {
	s := newSim(t, crmsim.Config{})
	require.Equal(t, "", s.URL())
	require.ErrorIs(t, s.Stop(context.Background()), crmsim.ErrNotStarted)
	require.NoError(t, s.Start(context.Background()))
	require.ErrorIs(t, s.Start(context.Background()), crmsim.ErrStarted)
	resp, err := http.Post(s.URL()+"/api/contacts", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	var got map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	resp.Body.Close()
	require.Equal(t, "contacts-1", got["id"])
	require.NoError(t, s.Stop(context.Background()))
	_, err = http.Post(s.URL()+"/api/contacts", "application/json", strings.NewReader("{}"))
	require.Error(t, err)
	require.Equal(t, 1, s.Attempts(), "records stay readable after Stop")
}

// TestConcurrentClients runs ordered clients that retry until a 2xx
// against a started sim while the failure settings change and the
// records are read; run with -race.
func TestConcurrentClients(t *testing.T) {
	s := newSim(t, crmsim.Config{ErrorRate: 0.2, RecordCapacity: 1024})
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)

	const workers, perKey = 8, 150
	expected := map[string][]string{}
	for w := range workers {
		key := fmt.Sprintf("customer:%d", w)
		for n := 1; n <= perKey; n++ {
			expected[key] = append(expected[key], fmt.Sprintf("%s#%d", key, n))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // knob turner and reader
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			s.SetErrorRate(float64(i%3) / 10)
			if i%10 == 0 {
				s.Outage(3 * time.Millisecond)
			}
			_ = s.Stats()
			_ = s.RecordsSince(s.Attempts() - 5)
			_ = s.SelfCheck()
		}
	}()
	var cw sync.WaitGroup
	for key, ids := range expected {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for _, id := range ids {
				for ctx.Err() == nil {
					r, _ := http.NewRequestWithContext(ctx, "POST", s.URL()+"/api/contacts", strings.NewReader(`{"a":1}`))
					r.Header.Set("Idempotency-Key", id)
					r.Header.Set("X-Sluice-Event-Id", id)
					r.Header.Set("X-Sluice-Key", key)
					resp, err := client.Do(r)
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						break
					}
				}
			}
		}()
	}
	cw.Wait()
	close(stop)
	wg.Wait()
	require.NoError(t, ctx.Err())

	rep := s.Check(expected)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, workers*perKey, rep.Totals.Delivered)
	require.Zero(t, rep.Totals.DuplicateIDs)
	require.True(t, s.SelfCheck().OK())
	require.Equal(t, workers*perKey, s.Delivered())
	require.Greater(t, s.Attempts(), s.Delivered(), "some requests got injected errors")
	st := s.Stats()
	require.Equal(t, s.Attempts(), st.Attempts)
	require.Equal(t, st.Attempts-st.Delivered, st.Injected)
}

// With a state file a restarted sim still knows the records it created:
// an update of one succeeds (it was 404: the demo's events parked after a
// restart of `sluice run`), a retried create gets its id back, and new ids
// do not repeat old ones (issue 11).
func TestStateFileKeepsRecordsAcrossRestarts(t *testing.T) {
	path := t.TempDir() + "/records.jsonl"
	idem := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }
	s1 := newSim(t, crmsim.Config{StateFile: path})
	require.Equal(t, `{"id":"customers-1"}`, do(t, s1, req{method: "POST", path: "/api/customers", hdr: idem("c#1")}).Body.String())
	require.Equal(t, `{"id":"customers-2"}`, do(t, s1, req{method: "POST", path: "/api/customers", hdr: idem("c#2")}).Body.String())
	require.NoError(t, s1.Start(context.Background()))
	require.NoError(t, s1.Stop(context.Background()))

	s2 := newSim(t, crmsim.Config{StateFile: path})
	require.Equal(t, 2, s2.Created())
	require.Equal(t, 200, do(t, s2, req{method: "PATCH", path: "/api/customers/customers-2"}).Code)
	require.Equal(t, `{"id":"customers-1"}`, do(t, s2, req{method: "POST", path: "/api/customers", hdr: idem("c#1")}).Body.String())
	require.Equal(t, `{"id":"customers-3"}`, do(t, s2, req{method: "POST", path: "/api/customers", hdr: idem("c#3")}).Body.String())

	// Reset forgets them, in the file too.
	s2.Reset()
	s3 := newSim(t, crmsim.Config{StateFile: path})
	require.Zero(t, s3.Created())
	require.Equal(t, 404, do(t, s3, req{method: "PATCH", path: "/api/customers/customers-2"}).Code)
}
