package inbound_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

func TestReceiverResponses(t *testing.T) {
	e := newEnv(t, sqliteDB)
	e.cfg.MaxBodyBytes = 4096
	e.cfg.Sources = append(e.cfg.Sources, inbound.Source{Name: "legacy", Scheme: inbound.SchemeHMACSHA256,
		Secrets: []string{"legacy-secret"}, Header: "X-Hub-Signature-256", Prefix: "sha256=", IDHeader: "X-Delivery"})
	s, _ := e.start()
	valid := mustJSON(statusItem("wh-1", 1, "contacted", time.Now(), actor("user", "a")))
	setTS := func(ts time.Time) func(*http.Request) {
		return func(r *http.Request) {
			require.NoError(t, inbound.SignHeaders(r.Header, secret, "d-1", ts, valid))
		}
	}
	// With two sources each gets <path>/<name>.
	postTo := func(path string, body []byte, mut ...func(*http.Request)) int {
		req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr()+path, bytes.NewReader(body))
		require.NoError(t, err)
		require.NoError(t, inbound.SignHeaders(req.Header, secret, "d-x", time.Now(), body))
		for _, m := range mut {
			m(req)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	crm := inbound.DefaultPath + "/crm"
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		mut    func(*http.Request)
		status int
	}{
		{"valid", crm, valid, nil, 202},
		{"replayed id is a harmless duplicate", crm, valid, nil, 202},
		{"bad signature", crm, valid, func(r *http.Request) { r.Header.Set("webhook-signature", "v1,AAAA") }, 401},
		{"unknown secret", crm, valid, func(r *http.Request) {
			sig, _ := inbound.Sign("whsec_d3Jvbmc=", "d-x", time.Now(), valid)
			r.Header.Set("webhook-signature", sig)
		}, 401},
		{"missing signature", crm, valid, func(r *http.Request) { r.Header.Del("webhook-signature") }, 401},
		{"stale timestamp", crm, valid, setTS(time.Now().Add(-6 * time.Minute)), 401},
		{"future timestamp", crm, valid, setTS(time.Now().Add(6 * time.Minute)), 401},
		{"tampered body", crm, valid, func(r *http.Request) {
			r.Body = http.NoBody
		}, 401},
		{"unreadable JSON", crm, []byte(`{"id":`), nil, 202},
		{"not an object", crm, []byte(`"hello"`), nil, 202},
		{"missing type", crm, []byte(`{"id":"x1"}`), nil, 202},
		{"batch item without id", crm, []byte(`[{"id":"x2","type":"note_added"},{"type":"note_added"}]`), nil, 202},
		{"too large", crm, []byte(`{"id":"x3","type":"note_added","pad":"` + strings.Repeat("x", 5000) + `"}`), nil, 413},
		{"wrong method", crm, valid, func(r *http.Request) { r.Method = http.MethodPut }, 405},
		{"hmac source", inbound.DefaultPath + "/legacy", valid, func(r *http.Request) {
			r.Header.Set("X-Hub-Signature-256", inbound.SignHMAC("legacy-secret", valid, "hex", "sha256="))
		}, 202},
		{"hmac source, bad signature", inbound.DefaultPath + "/legacy", valid, func(r *http.Request) {
			r.Header.Set("X-Hub-Signature-256", inbound.SignHMAC("other", valid, "hex", "sha256="))
		}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mut []func(*http.Request)
			if tc.mut != nil {
				mut = append(mut, tc.mut)
			}
			require.Equal(t, tc.status, postTo(tc.path, tc.body, mut...))
		})
	}
	// The valid item is stored once from each source (dedupe ids are per
	// source), the replay deduplicated; the four unreadable items of the
	// authenticated bodies are stored too, to be parked (never a 400).
	st, err := e.js.Stream(context.Background(), e.names.InboundStream())
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint64(7), info.State.Msgs)
	stats := s.Stats()
	require.Equal(t, uint64(1), stats.Duplicates)
	require.Equal(t, uint64(4), stats.Unreadable)
	require.Equal(t, uint64(7), stats.Unauthorized)
	require.Equal(t, uint64(1), stats.BadRequest) // the PUT
	require.Equal(t, uint64(1), stats.TooLarge)
	e.settled(2) // the second is an unchanged repeat of the first
	require.Equal(t, "contacted", e.leadStatus(1))
	// Everything else is parked, the unreadable body as it came.
	// (the first unreadable item isolates _unrouted: the others are parked behind it)
	require.Eventually(t, func() bool { return lanesParked(s) == 5 }, 10*time.Second, 20*time.Millisecond)
	pm := e.parked(t, "_unrouted")
	require.Contains(t, pm, `{"id":`)
}

func TestBatchIsStoredInOrderAndUnreadableItemsAreKept(t *testing.T) {
	e := newEnv(t, sqliteDB)
	s, _ := e.start()
	t0 := time.Now().Add(-time.Hour)
	var batch []map[string]any
	for i, st := range []string{"contacted", "negotiating", "won"} {
		batch = append(batch, statusItem("b-"+strconv.Itoa(i), 2, st, t0.Add(time.Duration(i)*time.Minute), actor("user", "a")))
	}
	code, r := post(t, s, "d-batch", mustJSON(batch))
	require.Equal(t, 202, code)
	require.Equal(t, 3, r.Accepted)
	e.settled(3)
	require.Equal(t, "won", e.leadStatus(2))

	code, r = post(t, s, "d-bad", []byte(`[{"id":"ok","type":"note_added"},{"id":"a b","type":"x.y"}]`))
	require.Equal(t, 202, code)
	require.Equal(t, 2, r.Accepted)
	require.Equal(t, 1, r.Unreadable)
}

func TestJetStreamDownAnswers503(t *testing.T) {
	e := newEnv(t, sqliteDB)
	e.cfg.PublishTimeout = 300 * time.Millisecond
	s, nc := e.start()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	code, _ := post(t, s, "d-1", mustJSON(noteItem("n1", 1, "hi")))
	require.Equal(t, 503, code)
	require.Equal(t, uint64(1), s.Stats().Unavailable)
	// The lanes cannot reach the server either: lane.Group.Stop waits for
	// the pull iterators to drain even after ctx ends, so close the
	// connection first.
	nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = s.Stop(ctx)
}
