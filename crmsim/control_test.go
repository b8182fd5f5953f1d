package crmsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
)

func startSim(t *testing.T, cfg crmsim.Config) (*crmsim.Sim, *crmsim.Client) {
	t.Helper()
	s := newSim(t, cfg)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s, crmsim.NewClient(s.URL() + "/")
}

func post(t *testing.T, url string, hdr map[string]string) int {
	t.Helper()
	r, err := http.NewRequest("POST", url, strings.NewReader("{}"))
	require.NoError(t, err)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestControlAPIRoundTrips(t *testing.T) {
	ctx := context.Background()
	s, c := startSim(t, crmsim.Config{RetryAfter: "1"})
	ev := func(id string) map[string]string {
		return map[string]string{"X-Sluice-Event-Id": id, "X-Sluice-Key": "k"}
	}

	// outage
	require.NoError(t, c.Outage(ctx, time.Hour))
	require.Equal(t, 503, post(t, s.URL()+"/api/contacts", ev("k#1")))
	require.NotNil(t, s.Knobs().OutageUntil)
	require.NoError(t, c.Outage(ctx, 0))
	require.Nil(t, s.Knobs().OutageUntil)
	require.Equal(t, 201, post(t, s.URL()+"/api/contacts", ev("k#1")))

	// config
	rate, lat, jit := 1.0, crmsim.Duration(5*time.Millisecond), crmsim.Duration(time.Millisecond)
	k, err := c.Configure(ctx, crmsim.ConfigPatch{ErrorRate: &rate, Latency: &lat, Jitter: &jit,
		Reject: map[string]int{"k#9": 422}})
	require.NoError(t, err)
	require.Equal(t, crmsim.Knobs{ErrorRate: 1, Latency: lat, Jitter: jit, RetryAfter: "1", Rejects: 1}, k)
	require.Equal(t, k, s.Knobs())
	require.Equal(t, 503, post(t, s.URL()+"/api/contacts", ev("k#2")))
	rate = 0
	_, err = c.Configure(ctx, crmsim.ConfigPatch{ErrorRate: &rate, Reject: map[string]int{"k#9": 0}})
	require.NoError(t, err)
	require.Equal(t, 201, post(t, s.URL()+"/api/contacts", ev("k#2")))
	require.NoError(t, c.Reject(ctx, "k#3", 422))
	require.Equal(t, 422, post(t, s.URL()+"/api/contacts", ev("k#3")))
	require.NoError(t, c.Reject(ctx, "k#3", 0))
	require.Equal(t, 201, post(t, s.URL()+"/api/contacts", ev("k#3")))
	require.Equal(t, 201, post(t, s.URL()+"/api/contacts", ev("k#3")))

	// stats
	st, err := c.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, st.Attempts)
	require.Equal(t, 4, st.Delivered)
	require.Equal(t, 1, st.Duplicates)
	require.Equal(t, map[int]int{201: 4, 503: 2, 422: 1}, st.Status)
	require.Equal(t, 3, st.Injected)

	// records, all and since
	recs, err := c.Records(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, normalise(s.Records()), normalise(recs))
	recs, err = c.Records(ctx, 5)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, 5, recs[0].Index)

	// report and check
	rep, err := c.SelfCheck(ctx)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, map[string]int{"k#3": 2}, rep.Keys[0].Duplicates)
	rep, err = c.Check(ctx, map[string][]string{"k": {"k#1", "k#2", "k#3", "k#4"}})
	require.NoError(t, err)
	require.False(t, rep.OK())
	require.Equal(t, []string{"k#4"}, rep.Keys[0].Missing)
	require.Equal(t, s.Check(map[string][]string{"k": {"k#1", "k#2", "k#3", "k#4"}}), rep)

	// reset
	require.NoError(t, c.Reset(ctx))
	st, err = c.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Attempts)
	require.Equal(t, crmsim.Knobs{RetryAfter: "1"}, st.Knobs)
	recs, err = c.Records(ctx, 0)
	require.NoError(t, err)
	require.Empty(t, recs)
}

// normalise makes decoded times comparable with in-memory ones.
func normalise(recs []crmsim.Record) []crmsim.Record {
	for i := range recs {
		recs[i].At = recs[i].At.Round(0).UTC()
	}
	return recs
}

func TestControlAPIRejectsBadRequests(t *testing.T) {
	s, c := startSim(t, crmsim.Config{})
	cases := []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/_sim/outage?for=soon", "", 400},
		{"POST", "/_sim/outage", "", 400},
		{"GET", "/_sim/outage?for=1s", "", 405},
		{"POST", "/_sim/config", `{"error_rate":2}`, 400},
		{"POST", "/_sim/config", `{"latency":5}`, 400},
		{"POST", "/_sim/config", `{"latency":"-1s"}`, 400},
		{"POST", "/_sim/config", `{"bogus":1}`, 400},
		{"POST", "/_sim/config", `{} {}`, 400},
		{"POST", "/_sim/config", `{"reject":{"a":200}}`, 400},
		{"POST", "/_sim/check", `[]`, 400},
		{"POST", "/_sim/check", `null`, 400},
		{"POST", "/_sim/check", `{"a":"a#1"}`, 400},
		{"GET", "/_sim/records?since=-1", "", 400},
		{"POST", "/_sim/reject?id=x&status=200", "", 400},
		{"GET", "/_sim/nothing", "", 404},
	}
	for _, tc := range cases {
		r, err := http.NewRequest(tc.method, s.URL()+tc.path, strings.NewReader(tc.body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, "%s %s %s", tc.method, tc.path, tc.body)
	}
	require.Zero(t, s.Attempts(), "control requests are not recorded")
	require.Equal(t, crmsim.Knobs{}, s.Knobs(), "a rejected config changed nothing")
	_, err := c.Configure(context.Background(), crmsim.ConfigPatch{ErrorRate: ptr(3.0)})
	require.ErrorIs(t, err, crmsim.ErrControl)
}

func ptr[T any](v T) *T { return &v }

func TestConfigEndpointAcceptsPartialJSON(t *testing.T) {
	s, _ := startSim(t, crmsim.Config{ErrorRate: 0.5})
	resp, err := http.Post(s.URL()+"/_sim/config", "application/json", strings.NewReader(`{"latency":"20ms"}`))
	require.NoError(t, err)
	var k crmsim.Knobs
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&k))
	resp.Body.Close()
	require.Equal(t, 0.5, k.ErrorRate, "fields not sent are kept")
	require.Equal(t, crmsim.Duration(20*time.Millisecond), k.Latency)
}

func FuzzDecodeExpected(f *testing.F) {
	for _, seed := range []string{
		`{"a":["a#1","a#2"],"b":[]}`, `{}`, `null`, `[]`, `{"a":null}`, `{"a":[1]}`, `{"a":["x"]} x`,
		`{"a":["\u00e9#1"]}`, `{"":[""]}`, `{"a":["a#1"],"a":["a#2"]}`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := crmsim.DecodeExpected(bytes.NewReader(b))
		if err != nil {
			require.ErrorIs(t, err, crmsim.ErrBadControl)
			require.Nil(t, m)
			return
		}
		require.NotNil(t, m)
		// whatever decodes must be checkable
		s := newSim(t, crmsim.Config{RecordCapacity: 1})
		r := s.Check(m)
		require.Equal(t, r.Totals.Missing == 0, r.Totals.Expected == 0)
	})
}

func FuzzDecodePatch(f *testing.F) {
	for _, seed := range []string{
		`{"error_rate":0.1,"latency":"20ms","jitter":"5ms"}`, `{}`, `{"error_rate":1.0000001}`,
		`{"latency":"-1ns"}`, `{"latency":10}`, `{"retry_after":"3"}`, `{"reject":{"x":422,"y":0}}`,
		`{"reject":{"x":500}}`, `{"error_rate":NaN}`, `{"error_rate":1e400}`, `{"x":1}`, `{} {}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := crmsim.DecodePatch(bytes.NewReader(b))
		if err != nil {
			require.ErrorIs(t, err, crmsim.ErrBadControl)
			return
		}
		require.NoError(t, p.Validate())
		s := newSim(t, crmsim.Config{RecordCapacity: 1})
		require.NoError(t, s.Apply(p))
		k := s.Knobs()
		require.True(t, k.ErrorRate >= 0 && k.ErrorRate <= 1)
		require.GreaterOrEqual(t, k.Latency, crmsim.Duration(0))
		require.GreaterOrEqual(t, k.Jitter, crmsim.Duration(0))
	})
}
