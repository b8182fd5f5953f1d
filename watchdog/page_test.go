package watchdog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
	"sluice.dev/watchdog"
)

const pageToken = "test-operator-token-0123456789"

// pageFixture runs an isolated enricher group over one partition whose
// handler parks every event of a key while that key is "broken", a
// watchdog and its status page on an httptest server.
type pageFixture struct {
	*env
	t      *testing.T
	srv    *httptest.Server
	admin  *lane.Parked
	mu     sync.Mutex
	seen   []string
	broken map[string]bool
}

func newPageFixture(t *testing.T, token string) *pageFixture {
	return newPageFixtureWith(t, token, 1, nil)
}

// newPageFixtureWith is newPageFixture with partitions lanes and the
// watchdog config changed by edit (nil: none).
func newPageFixtureWith(t *testing.T, token string, partitions int, edit func(*watchdog.Config)) *pageFixture {
	e := newEnv(t, partitions, 30*time.Second)
	f := &pageFixture{env: e, t: t, broken: map[string]bool{}}
	g, err := lane.NewGroup(e.js, lane.Config{Stage: topology.StageEnricher, Names: e.names, Logger: zerolog.Nop(),
		IsolateKeys: true,
		Handler: func(_ context.Context, m *lane.Msg) lane.Outcome {
			body := string(m.Data)
			key, _, _ := strings.Cut(body, "-")
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.broken[key] {
				return lane.Park("crm rejected", errors.New("422"), nil)
			}
			f.seen = append(f.seen, body)
			return lane.Done()
		}})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	cfg := e.fastConfig()
	cfg.Page.Token = token
	cfg.Page.ReplayWait = 5 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	w := e.start(t, cfg, watchdog.Deps{})
	f.srv = httptest.NewServer(w.Page().Handler())
	t.Cleanup(f.srv.Close)
	f.admin, err = lane.OpenParked(context.Background(), e.js, e.names)
	require.NoError(t, err)
	return f
}

func (f *pageFixture) publish(key string, from, to int) {
	for i := from; i < to; i++ {
		m := nats.NewMsg(f.names.EventSubject("t1", key))
		m.Data = fmt.Appendf(nil, "%s-%d", key, i)
		m.Header.Set(nats.MsgIdHdr, string(m.Data))
		_, err := f.js.PublishMsg(context.Background(), m)
		require.NoError(f.t, err)
	}
}

func (f *pageFixture) seenOf(key string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.seen {
		if strings.HasPrefix(s, key+"-") {
			out = append(out, s)
		}
	}
	return out
}

// parkKey breaks key, publishes n of its events and waits until all are
// parked; then it "fixes" the CRM.
func (f *pageFixture) parkKey(key string, n int) {
	f.mu.Lock()
	f.broken[key] = true
	f.mu.Unlock()
	f.publish(key, 0, n)
	require.Eventually(f.t, func() bool {
		pk, err := f.admin.Get(context.Background(), topology.StageEnricher, key)
		return err == nil && pk.Count >= n
	}, 10*time.Second, 20*time.Millisecond)
	f.mu.Lock()
	f.broken[key] = false
	f.mu.Unlock()
}

func (f *pageFixture) do(method, path, token, body string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(f.t, err)
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func (f *pageFixture) status() watchdog.PageStatus {
	f.t.Helper()
	resp, err := http.Get(f.srv.URL + "/api/status")
	require.NoError(f.t, err)
	defer resp.Body.Close()
	require.Equal(f.t, http.StatusOK, resp.StatusCode)
	var st watchdog.PageStatus
	require.NoError(f.t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func (f *pageFixture) laneState(consumer string) string {
	for _, l := range f.status().Lanes {
		if l.Consumer == consumer {
			return l.State
		}
	}
	return ""
}

// audits returns the audit records stored on <prefix>.audit.<action>.
func (f *pageFixture) audits(action string) []watchdog.AuditRecord {
	f.t.Helper()
	s, err := f.js.Stream(context.Background(), f.names.AuditStream())
	require.NoError(f.t, err)
	var out []watchdog.AuditRecord
	for seq := uint64(1); ; {
		m, err := s.GetMsg(context.Background(), seq, jetstream.WithGetMsgSubject(f.names.AuditSubject(action)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		require.NoError(f.t, err)
		var r watchdog.AuditRecord
		require.NoError(f.t, json.Unmarshal(m.Data, &r))
		out = append(out, r)
		seq = m.Sequence + 1
	}
}

func TestPageServesHTMLAndShowsPausedLane(t *testing.T) {
	f := newPageFixture(t, "")
	lane0 := f.names.ConsumerName(topology.StageEnricher, 0)
	require.Equal(t, watchdog.LaneOK, f.laneState(lane0))

	resp, err := http.Get(f.srv.URL + "/")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), `src="static/app.js"`)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")

	stream, _ := f.names.StageFilter(topology.StageEnricher, 0)
	_, err = f.js.PauseConsumer(context.Background(), stream, lane0, time.Now().Add(time.Minute))
	require.NoError(t, err)
	st := f.status()
	require.False(t, st.Control, "no token configured: read-only")
	require.Contains(t, st.Stages, topology.StageEnricher)
	require.Len(t, st.Lanes, 1)
	require.Equal(t, watchdog.LanePaused, st.Lanes[0].State)
	require.NotNil(t, st.Lanes[0].PausedUntil)

	// No token configured: control endpoints are disabled, even with a header.
	code, _ := f.do("POST", "/api/lanes/"+lane0+"/resume", "Bearer "+pageToken, "")
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, watchdog.LanePaused, f.laneState(lane0))
}

func TestPageControlWithoutTokenChangesNothing(t *testing.T) {
	f := newPageFixture(t, pageToken)
	f.parkKey("K", 2)
	lane0 := f.names.ConsumerName(topology.StageEnricher, 0)
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + pageToken, pageToken, "Bearer " + pageToken + "x"} {
		for _, req := range []struct{ path, body string }{
			{"/api/lanes/" + lane0 + "/pause", `{"reason":"x"}`},
			{"/api/parked/enricher/K/replay", ""},
			{"/api/parked/enricher/K/discard", `{"reason":"x"}`},
		} {
			code, _ := f.do("POST", req.path, auth, req.body)
			require.Equal(t, http.StatusUnauthorized, code, "%q %s", auth, req.path)
		}
	}
	require.Equal(t, watchdog.LaneOK, f.laneState(lane0))
	pk, err := f.admin.Get(context.Background(), topology.StageEnricher, "K")
	require.NoError(t, err)
	require.Equal(t, lane.StateParked, pk.State)
	msgs, err := f.admin.Messages(context.Background(), topology.StageEnricher, "K")
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Empty(t, f.seenOf("K"))
	for _, a := range []string{watchdog.AuditPause, watchdog.AuditReplay, watchdog.AuditDiscard} {
		require.Empty(t, f.audits(a), a)
	}
}

func TestPageActionsWithToken(t *testing.T) {
	f := newPageFixture(t, pageToken)
	f.parkKey("K", 3)
	f.parkKey("D", 1)
	f.publish("other", 0, 2)
	require.Eventually(t, func() bool { return len(f.seenOf("other")) == 2 }, 5*time.Second, 20*time.Millisecond)
	st := f.status()
	require.True(t, st.Control)
	require.Len(t, st.Parked, 2)
	auth := "Bearer " + pageToken
	lane0 := f.names.ConsumerName(topology.StageEnricher, 0)

	tests := []struct {
		name, path, body string
		code             int
	}{
		{"unknown lane", "/api/lanes/enricher-999/pause", "", http.StatusNotFound},
		{"bad duration", "/api/lanes/" + lane0 + "/pause", `{"for":"soon"}`, http.StatusBadRequest},
		{"unknown field", "/api/lanes/" + lane0 + "/pause", `{"until":"x"}`, http.StatusBadRequest},
		{"unknown stage", "/api/parked/nope/K/replay", "", http.StatusNotFound},
		{"key not parked", "/api/parked/enricher/nokey/replay", "", http.StatusNotFound},
		{"discard without reason", "/api/parked/enricher/D/discard", `{"reason":"  "}`, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do("POST", tc.path, auth, tc.body)
			require.Equal(t, tc.code, code, "%v", body)
		})
	}
	require.Empty(t, f.audits(watchdog.AuditPause), "refused requests are not audited")

	code, body := f.do("POST", "/api/lanes/"+lane0+"/pause", auth, `{"reason":"crm maintenance","for":"1m"}`)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, watchdog.LanePaused, f.laneState(lane0))
	code, body = f.do("POST", "/api/lanes/"+lane0+"/resume", auth, "")
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, watchdog.LaneOK, f.laneState(lane0))

	code, body = f.do("POST", "/api/parked/enricher/K/replay", auth, `{"reason":"crm fixed"}`)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, true, body["unblocked"], "%v", body)
	require.Equal(t, []string{"K-0", "K-1", "K-2"}, f.seenOf("K"))
	_, err := f.admin.Get(context.Background(), topology.StageEnricher, "K")
	require.ErrorIs(t, err, lane.ErrNotParked)

	code, body = f.do("POST", "/api/parked/enricher/"+url.PathEscape("D")+"/discard", auth, `{"reason":"test data"}`)
	require.Equal(t, http.StatusOK, code, "%v", body)
	_, err = f.admin.Get(context.Background(), topology.StageEnricher, "D")
	require.ErrorIs(t, err, lane.ErrNotParked)
	require.Empty(t, f.seenOf("D"))

	pauses := f.audits(watchdog.AuditPause)
	require.Len(t, pauses, 1)
	require.Equal(t, "operator", pauses[0].By)
	require.Equal(t, lane0, pauses[0].Consumer)
	require.Equal(t, "crm maintenance", pauses[0].Reason)
	require.NotNil(t, pauses[0].Until)
	require.Len(t, f.audits(watchdog.AuditResume), 1)
	replays := f.audits(watchdog.AuditReplay)
	require.Len(t, replays, 1)
	require.Equal(t, "K", replays[0].Key)
	require.Equal(t, topology.StageEnricher, replays[0].Stage)
	discards := f.audits(watchdog.AuditDiscard)
	require.Len(t, discards, 1)
	require.Equal(t, "test data", discards[0].Reason)
	require.Empty(t, f.status().Parked)
}

func TestPageConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		page watchdog.PageConfig
		want string
	}{
		{"ok defaults", watchdog.PageConfig{}, ""},
		{"off", watchdog.PageConfig{Addr: "off"}, ""},
		{"own addr", watchdog.PageConfig{Addr: "127.0.0.1:9091"}, ""},
		{"bad addr", watchdog.PageConfig{Addr: "localhost"}, "watchdog.page.addr"},
		{"short token", watchdog.PageConfig{Token: "short"}, "watchdog.page.token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := watchdog.Config{Page: tc.page}.WithDefaults().Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "short", "the token leaked into an error")
		})
	}
}
