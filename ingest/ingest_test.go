package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/ingest"
	"sluice.dev/mesh/meshtest"
	"sluice.dev/mesh/topology"
)

func signup(id string, user, step int) string {
	return fmt.Sprintf(`{"id":%q,"type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":%d,"email":"u%d@example.com","step":%d}}`, id, user, user, step)
}

func TestSingleEventAccepted(t *testing.T) {
	h := setup(t, ingest.Config{})
	r := h.postJSON(readFile(t, "single.json"))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	require.Equal(t, []ingest.Result{{Index: 0, ID: "evt-1", Key: "user:7", Stored: true, StreamSeq: 1}}, r.body.Results)

	r = h.postJSON(readFile(t, "note_with_key.json"))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	require.Equal(t, uint64(2), h.svc.Accepted())

	msgs := h.stored()
	require.Len(t, msgs, 2)
	prefix := h.names.Config().Prefix
	for i, want := range []struct{ id, typ, key string }{{"evt-1", "signup", "user:7"}, {"n-1", "note", "ticket 42.a/b"}} {
		m := msgs[i]
		require.Equal(t, want.id, m.Header.Get(nats.MsgIdHdr))
		require.Equal(t, fmt.Sprintf("%s.events.%d.%s.%s", prefix, h.names.PartitionOf(want.key), want.typ,
			topology.KeyToken(want.key)), m.Subject, "stored on the partition subject")
		e := decodeStored(t, m)
		require.Equal(t, want.key, e.Key, "the stored envelope carries the (derived) key")
		require.Equal(t, want.typ, e.Type)
	}
	require.Equal(t, "crm-sync", decodeStored(t, msgs[1]).Source)
	require.Equal(t, "ticket~2042~2Ea~2Fb", topology.KeyToken("ticket 42.a/b"))
}

func TestBatchKeepsOrder(t *testing.T) {
	h := setup(t, ingest.Config{})
	r := h.postNDJSON(readFile(t, "batch.ndjson"))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	require.Len(t, r.body.Results, 3)
	for i, id := range []string{"b-1", "b-2", "b-3"} {
		require.Equal(t, i, r.body.Results[i].Index)
		require.Equal(t, id, r.body.Results[i].ID)
		require.True(t, r.body.Results[i].Stored)
	}
	require.Equal(t, "user:1", r.body.Results[2].Key)

	// Interleave 4 keys, 25 events each, so every wave has four events.
	var b strings.Builder
	for step := 0; step < 25; step++ {
		for user := 10; user < 14; user++ {
			fmt.Fprintln(&b, signup(fmt.Sprintf("u%d-s%d", user, step), user, step))
		}
	}
	r = h.postNDJSON(b.String())
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	require.Len(t, r.body.Results, 100)
	lastSeq := map[string]uint64{}
	for i, res := range r.body.Results {
		require.Equal(t, i, res.Index)
		require.Greater(t, res.StreamSeq, lastSeq[res.Key], "per-key order in the stream")
		lastSeq[res.Key] = res.StreamSeq
	}

	msgs := h.stored()
	require.Len(t, msgs, 103)
	steps := map[string]int{}
	for _, m := range msgs[3:] {
		e := decodeStored(t, m)
		require.Equal(t, fmt.Sprintf("u%s-s%d", strings.TrimPrefix(e.Key, "user:"), steps[e.Key]),
			m.Header.Get(nats.MsgIdHdr), "events of one key are stored in request order")
		steps[e.Key]++
	}
	require.Len(t, steps, 4)
}

func TestBadInputStoresNothing(t *testing.T) {
	h := setup(t, ingest.Config{MaxBodyBytes: 4096, MaxBatch: 5})
	require.Equal(t, http.StatusAccepted, h.postJSON(signup("seed", 1, 0)).status)
	require.Equal(t, uint64(1), h.count())

	big := fmt.Sprintf(`{"id":"big","type":"note","key":"k","occurred_at":"2025-11-20T10:15:00Z","data":{"text":%q}}`, strings.Repeat("x", 5000))
	good := signup("ok-1", 2, 0)
	tests := []struct {
		name        string
		contentType string
		body        io.Reader
		status      int
		index       int
		field       string
	}{
		{"invalid JSON", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":`), 400, 0, ""},
		{"array with a bad event", ingest.MediaJSON, strings.NewReader(`[` + good + `,{"id":"bad","type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":4,"email":"nope"}}]`), 400, 1, "data.email"},
		{"array of non-objects", ingest.MediaJSON, strings.NewReader(`[` + good + `,1]`), 400, 1, ""},
		{"broken array", ingest.MediaJSON, strings.NewReader(`[` + good), 400, 0, ""},
		{"empty array", ingest.MediaJSON, strings.NewReader(`[]`), 400, 0, ""},
		{"array over max_batch", ingest.MediaJSON, strings.NewReader(`[` + strings.TrimSuffix(strings.Repeat(good+",", 6), ",") + `]`), 413, 0, ""},
		{"unknown type without key", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"nope","occurred_at":"2025-11-20T10:15:00Z","data":{}}`), 400, 0, "type"},
		{"empty key", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"signup","key":"","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"a@b.c"}}`), 400, 0, "key"},
		{"empty key, other case", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"signup","KEY":"","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"a@b.c"}}`), 400, 0, "key"},
		{"missing id", ingest.MediaJSON, strings.NewReader(`{"type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"a@b"}}`), 400, 0, "id"},
		{"missing type", ingest.MediaJSON, strings.NewReader(`{"id":"x","key":"k","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "type"},
		{"missing key (type without derivation)", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "key"},
		{"key with a control character", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","key":"a\u0001b","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "key"},
		{"key with a C1 control character (U+0085)", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","key":"a\u0085b","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "key"},
		{"envelope field twice", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","key":"a","key":"b","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "key"},
		{"data field twice", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","key":"a","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t","text":"u"}}`), 400, 0, "data.text"},
		{"source too long", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"note","key":"a","source":"` + strings.Repeat("s", 129) + `","occurred_at":"2025-11-20T10:15:00Z","data":{"text":"t"}}`), 400, 0, "source"},
		{"schema violation", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"nope"}}`), 400, 0, "data.email"},
		{"unknown envelope field", ingest.MediaJSON, strings.NewReader(readFile(t, "unknown_field.json")), 400, 0, "colour"},
		{"unknown type", ingest.MediaJSON, strings.NewReader(`{"id":"x","type":"refund","key":"k","occurred_at":"2025-11-20T10:15:00Z","data":{}}`), 400, 0, "type"},
		{"oversize body", ingest.MediaJSON, strings.NewReader(big), 413, 0, ""},
		{"oversize body, chunked", ingest.MediaJSON, io.MultiReader(strings.NewReader(big)), 413, 0, ""},
		{"one bad line in a batch", ingest.MediaNDJSON, strings.NewReader(good + "\n" + signup("ok-2", 3, 0) + "\n\n" +
			`{"id":"bad","type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":4,"email":"nope"}}` + "\n" + signup("ok-3", 5, 0)), 400, 2, "data.email"},
		{"unreadable line in a batch", ingest.MediaNDJSON, strings.NewReader(good + "\n{oops\n"), 400, 1, ""},
		{"same id twice in a batch", ingest.MediaNDJSON, strings.NewReader(good + "\n" + good), 400, 1, "id"},
		{"empty batch", ingest.MediaNDJSON, strings.NewReader("\n \n"), 400, 0, ""},
		{"too many events", ingest.MediaNDJSON, strings.NewReader(strings.Repeat(good+"\n", 6)), 413, 0, ""},
		{"unsupported content type", "text/plain", strings.NewReader(good), 415, 0, ""},
		{"no content type", "", strings.NewReader(good), 415, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.post(tc.contentType, "", tc.body)
			require.Equal(t, tc.status, r.status, r.raw)
			require.NotEmpty(t, r.body.Error)
			require.Empty(t, r.body.Results)
			if tc.status == 400 {
				require.Equal(t, "invalid events", r.body.Error)
				require.NotEmpty(t, r.body.Errors)
				var fields []string
				for _, e := range r.body.Errors {
					if e.Index == tc.index {
						fields = append(fields, e.Field)
						require.NotEmpty(t, e.Reason)
					}
				}
				require.Contains(t, fields, tc.field, r.raw)
			}
			require.Equal(t, uint64(1), h.count(), "nothing of a rejected request is stored")
		})
	}
	var found bool
	r := h.postNDJSON(good + "\n" + `{"id":"bad","type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":4,"email":"nope"}}`)
	for _, e := range r.body.Errors {
		found = found || (e.ID == "bad" && e.Line == 2 && e.Field == "data.email")
	}
	require.True(t, found, "errors carry the event id and NDJSON line: %s", r.raw)
}

// The first-hour error texts: the real problem first, no Go jargon.
func TestErrorTextsSayWhatIsWrong(t *testing.T) {
	h := setup(t, ingest.Config{})
	r := h.postJSON(`{"id":"x","type":"nope","occurred_at":"2025-11-20T10:15:00Z","data":{}}`)
	require.Equal(t, http.StatusBadRequest, r.status, r.raw)
	require.Len(t, r.body.Errors, 1, "an unknown type does not also ask for a key: %s", r.raw)
	require.Equal(t, "type", r.body.Errors[0].Field)
	require.Contains(t, r.body.Errors[0].Reason, `unknown event type "nope"`)
	require.Contains(t, r.body.Errors[0].Reason, "signup", "the known types are named")

	r = h.postNDJSON(`[` + signup("a-1", 1, 0) + `]`)
	require.Equal(t, http.StatusBadRequest, r.status, r.raw)
	require.NotContains(t, r.raw, "struct")
	require.Contains(t, r.body.Errors[0].Reason, "must be a JSON object")

	r = h.postJSON(`{"id":"x","type":"signup","key":"","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"a@b.c"}}`)
	require.Equal(t, http.StatusBadRequest, r.status, r.raw)
	require.Equal(t, "key", r.body.Errors[0].Field)
	require.Contains(t, r.body.Errors[0].Reason, "leave the field out")
	require.Zero(t, h.count())
}

// application/json with an array body is a batch: stored in order, one
// result per element.
func TestJSONArrayIsABatch(t *testing.T) {
	h := setup(t, ingest.Config{})
	r := h.postJSON(" [" + signup("a-1", 1, 0) + ",\n" + signup("a-2", 1, 1) + "," + signup("a-3", 2, 0) + "]")
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	require.Len(t, r.body.Results, 3)
	for i, id := range []string{"a-1", "a-2", "a-3"} {
		require.Equal(t, i, r.body.Results[i].Index)
		require.Equal(t, id, r.body.Results[i].ID)
		require.True(t, r.body.Results[i].Stored)
	}
	require.Less(t, r.body.Results[0].StreamSeq, r.body.Results[1].StreamSeq, "per-key order")
	require.Equal(t, uint64(3), h.count())
}

// Unknown paths and wrong methods answer in the API's JSON shape.
func TestUnknownPathAndMethodAnswerJSON(t *testing.T) {
	h := setup(t, ingest.Config{})
	for _, tc := range []struct {
		method, path string
		status       int
		allow, text  string
	}{
		{http.MethodGet, "/v1/events", http.StatusMethodNotAllowed, "POST", "use POST"},
		{http.MethodPut, "/v1/events", http.StatusMethodNotAllowed, "POST", "use POST"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "GET", "use GET"},
		{http.MethodGet, "/nope", http.StatusNotFound, "", "POST /v1/events"},
		{http.MethodPost, "/v1/event", http.StatusNotFound, "", "no such path /v1/event"},
	} {
		req, err := http.NewRequest(tc.method, h.url+tc.path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var body ingest.Response
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body), "%s %s", tc.method, tc.path)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, "%s %s", tc.method, tc.path)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.Equal(t, tc.allow, resp.Header.Get("Allow"))
		require.Contains(t, body.Error, tc.text)
	}
}

func TestDuplicateIDStoredOnce(t *testing.T) {
	h := setup(t, ingest.Config{})
	first := h.postJSON(signup("dup-1", 1, 0))
	require.Equal(t, http.StatusAccepted, first.status, first.raw)
	require.False(t, first.body.Results[0].Duplicate)
	again := h.postJSON(signup("dup-1", 1, 0))
	require.Equal(t, http.StatusAccepted, again.status, again.raw)
	require.True(t, again.body.Results[0].Duplicate)
	require.Equal(t, first.body.Results[0].StreamSeq, again.body.Results[0].StreamSeq)
	require.Equal(t, uint64(1), h.count())
	require.Equal(t, uint64(1), h.svc.Stats().Duplicates)
}

func TestJetStreamDownGives503(t *testing.T) {
	h := setup(t, ingest.Config{PublishTimeout: 300 * time.Millisecond})
	require.Equal(t, http.StatusAccepted, h.postJSON(signup("before", 1, 0)).status)
	h.srv.Shutdown()
	h.srv.WaitForShutdown()

	r := h.postNDJSON(signup("down-1", 1, 1) + "\n" + signup("down-2", 1, 2))
	require.Equal(t, http.StatusServiceUnavailable, r.status, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body.Error, "retry the whole request")
	require.Len(t, r.body.Results, 2)
	for _, res := range r.body.Results {
		require.False(t, res.Stored)
		require.NotEmpty(t, res.Error)
	}

	resp, err := http.Get(h.url + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	resp, err = http.Get(h.url + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestPartialStoreReportsWhatWasStored fills the stream up mid-batch: the
// reply says exactly which events were stored, and later waves are not sent.
func TestPartialStoreReportsWhatWasStored(t *testing.T) {
	h := setup(t, ingest.Config{})
	cfg := h.names.EventsStreamConfig()
	cfg.MaxMsgs = 3
	_, err := h.js.UpdateStream(context.Background(), cfg)
	require.NoError(t, err)

	// Waves: {a1,b1} {a2,b2} {a3}. The stream takes a1, b1, a2.
	body := signup("a1", 1, 1) + "\n" + signup("a2", 1, 2) + "\n" + signup("a3", 1, 3) + "\n" +
		signup("b1", 2, 1) + "\n" + signup("b2", 2, 2)
	r := h.postNDJSON(body)
	require.Equal(t, http.StatusServiceUnavailable, r.status, r.raw)
	stored := map[string]bool{}
	for _, res := range r.body.Results {
		stored[res.ID] = res.Stored
		require.Equal(t, res.Stored, res.Error == "", "%+v", res)
	}
	require.Equal(t, map[string]bool{"a1": true, "a2": true, "a3": false, "b1": true, "b2": false}, stored)
	require.Contains(t, r.body.Results[2].Error, "not sent")
	require.Equal(t, uint64(3), h.count())

	// The producer retries the whole batch once there is room: dedupe.
	cfg.MaxMsgs = -1
	_, err = h.js.UpdateStream(context.Background(), cfg)
	require.NoError(t, err)
	r = h.postNDJSON(body)
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	dups := 0
	for _, res := range r.body.Results {
		if res.Duplicate {
			dups++
		}
	}
	require.Equal(t, 3, dups)
	require.Equal(t, uint64(5), h.count())
	var order []string
	for _, m := range h.stored() {
		order = append(order, m.Header.Get(nats.MsgIdHdr))
	}
	require.Equal(t, []string{"a1", "b1", "a2", "b2", "a3"}, order)
}

func TestAuth(t *testing.T) {
	const tok = "s3cret-token-0123456789"
	h := setup(t, ingest.Config{Tokens: []ingest.Token{{Name: "web", Token: tok}, {Name: "batch-jobs", Token: "another-token-0123456789"}}})
	for name, header := range map[string]string{"missing": "", "wrong": "Bearer nope-nope-nope-nope", "basic": "Basic " + tok, "prefix": "Bearer " + tok[:10]} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, h.url+"/v1/events", strings.NewReader(signup("a", 1, 0)))
			require.NoError(t, err)
			req.Header.Set("Content-Type", ingest.MediaJSON)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
		})
	}
	require.Zero(t, h.count())
	require.EqualValues(t, 4, h.svc.Stats().Unauthorized)
	require.Zero(t, h.svc.Stats().RejectedRequests)

	r := h.post(ingest.MediaJSON, tok, strings.NewReader(signup("a", 1, 0)))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	note := strings.Replace(readFile(t, "note_with_key.json"), `"crm-sync"`, `"batch-jobs"`, 1)
	r = h.post(ingest.MediaJSON, "another-token-0123456789", strings.NewReader(note))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	msgs := h.stored()
	require.Len(t, msgs, 2)
	require.Equal(t, "web", decodeStored(t, msgs[0]).Source, "the token name is the default source")
	require.Equal(t, "batch-jobs", decodeStored(t, msgs[1]).Source, "the producer's own source is kept")
}

func TestMicroEndpoints(t *testing.T) {
	h := setup(t, ingest.Config{HTTPAddr: "off"})
	require.Empty(t, h.svc.Addr(), "HTTP is off")
	prefix := h.names.Config().Prefix

	m, err := h.nc.Request(prefix+".ingest.validate", []byte(readFile(t, "single.json")), 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, m.Header.Get("Nats-Service-Error-Code"), string(m.Data))
	require.Contains(t, string(m.Data), `"key":"user:7"`)
	require.Zero(t, h.count(), "validate stores nothing")

	m, err = h.nc.Request(prefix+".ingest.validate", []byte(`{"id":"x","type":"signup","occurred_at":"2025-11-20T10:15:00Z","data":{"user_id":3,"email":"nope"}}`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "400", m.Header.Get("Nats-Service-Error-Code"))
	require.Contains(t, string(m.Data), `"field":"data.email"`)

	m, err = h.nc.Request(prefix+".ingest.publish", []byte(readFile(t, "single.json")), 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, m.Header.Get("Nats-Service-Error-Code"), string(m.Data))
	require.Contains(t, string(m.Data), `"stream_seq":1`)

	req := nats.NewMsg(prefix + ".ingest.publish")
	req.Header.Set("Content-Type", ingest.MediaNDJSON)
	req.Data = []byte(readFile(t, "batch.ndjson"))
	m, err = h.nc.RequestMsg(req, 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, m.Header.Get("Nats-Service-Error-Code"), string(m.Data))
	require.Equal(t, uint64(4), h.count())

	req = nats.NewMsg(prefix + ".ingest.publish")
	req.Header.Set("Content-Type", "text/csv")
	req.Data = []byte("a,b")
	m, err = h.nc.RequestMsg(req, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "415", m.Header.Get("Nats-Service-Error-Code"))

	m, err = h.nc.Request("$SRV.STATS."+ingest.ServiceName, nil, 5*time.Second)
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"accepted":4`)
	require.Contains(t, string(m.Data), `"rejected":1`)
}

func TestHealthAndReady(t *testing.T) {
	h := setup(t, ingest.Config{})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(h.url + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	resp, err := http.Get(h.url + "/v1/events")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	require.NoError(t, h.js.DeleteStream(context.Background(), h.names.EventsStream()))
	resp, err = http.Get(h.url + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "not ready without the events stream")
}

// TestStopFinishesInFlight stops the service while a request is still
// sending its body: the request completes, is stored and gets its 202.
func TestStopFinishesInFlight(t *testing.T) {
	h := setup(t, ingest.Config{})
	pr, pw := io.Pipe()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/events", pr)
		req.Header.Set("Content-Type", ingest.MediaNDJSON)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	_, err := pw.Write([]byte(signup("slow-1", 1, 0) + "\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.svc.InFlight() == 1 }, 5*time.Second, 5*time.Millisecond)

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- h.svc.Stop(ctx)
	}()
	// New connections are refused once Stop closed the listener.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	require.Eventually(t, func() bool {
		resp, err := fresh.Get(h.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	}, 5*time.Second, 5*time.Millisecond)
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a request was in flight", err)
	default:
	}

	_, err = pw.Write([]byte(signup("slow-2", 1, 1) + "\n"))
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	res := <-done
	require.NoError(t, res.err)
	require.Equal(t, http.StatusAccepted, res.status)
	require.NoError(t, <-stopped)
	require.Equal(t, uint64(2), h.count())
}

func TestStartStop(t *testing.T) {
	h := setup(t, ingest.Config{})
	require.ErrorIs(t, h.svc.Start(context.Background()), ingest.ErrAlreadyStarted)
	_, err := ingest.New(ingest.Config{}, ingest.Deps{})
	require.Error(t, err)
	r := h.post(ingest.MediaJSON, "", bytes.NewBufferString(signup("x", 1, 0)))
	require.Equal(t, http.StatusAccepted, r.status)
}

// 401s are counted and logged as WARN with the remote address and the
// reason, at most a burst of 10 a second (a flood of bad tokens must not
// flood the log); the token is never logged (issue 11: INFO per request).
func TestUnauthorizedIsCountedAndLoggedSampled(t *testing.T) {
	var buf meshtest.LogBuffer
	h := setupLog(t, ingest.Config{Tokens: []ingest.Token{{Name: "web", Token: "s3cret-token-0123456789"}}},
		zerolog.New(&buf).Level(zerolog.InfoLevel))
	for i := range 30 {
		req, err := http.NewRequest(http.MethodPost, h.url+"/v1/events", strings.NewReader(signup("a", 1, 0)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", ingest.MediaJSON)
		if i%2 == 0 {
			req.Header.Set("Authorization", "Bearer wrong-token-"+strconv.Itoa(i))
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	require.EqualValues(t, 30, h.svc.Stats().Unauthorized)
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		if m["message"] == "request refused: 401" {
			lines = append(lines, m)
		}
	}
	require.NotEmpty(t, lines)
	require.LessOrEqual(t, len(lines), 20, "refusals are sampled")
	reasons := map[any]bool{}
	for _, m := range lines {
		require.Equal(t, "warn", m["level"])
		require.NotEmpty(t, m["remote"])
		reasons[m["reason"]] = true
	}
	require.Equal(t, map[any]bool{"unknown bearer token": true, "no bearer token": true}, reasons)
	require.NotContains(t, buf.String(), "wrong-token")
}
