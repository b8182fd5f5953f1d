package ingest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"sluice.dev/ingest"
)

const (
	websiteToken = "website-token-0123456789"
	cronToken    = "cron-token-0123456789abc"
)

func note(id, key, source, text string) string {
	src := ""
	if source != "" {
		src = `"source":"` + source + `",`
	}
	return `{"id":"` + id + `","type":"note","key":"` + key + `",` + src +
		`"occurred_at":"2026-01-01T00:00:00Z","data":{"text":"` + text + `"}}`
}

func identityHarness(t *testing.T) *harness {
	return setup(t, ingest.Config{Tokens: []ingest.Token{{Name: "website", Token: websiteToken}, {Name: "cron", Token: cronToken}}})
}

// TestTokenSourceIsEnforced: a token's name is its producer's only source.
// Token website claiming source cron is refused with 403 naming the field
// (enforced, not stamped: a silent rewrite would hide the producer's bug
// and store an event under a source it did not send); the whole request
// is refused; no source or its own is accepted.
func TestTokenSourceIsEnforced(t *testing.T) {
	h := identityHarness(t)
	r := h.post(ingest.MediaJSON, websiteToken, strings.NewReader(note("s-1", "k", "cron", "x")))
	require.Equal(t, http.StatusForbidden, r.status, r.raw)
	require.Equal(t, ingest.ErrSourceForbidden.Error(), r.body.Error)
	require.Len(t, r.body.Errors, 1)
	require.Equal(t, "source", r.body.Errors[0].Field)
	require.Contains(t, r.body.Errors[0].Reason, `may only send source "website"`)

	batch := note("s-2", "k", "", "x") + "\n" + note("s-3", "k", "cron", "y") + "\n"
	r = h.post(ingest.MediaNDJSON, websiteToken, strings.NewReader(batch))
	require.Equal(t, http.StatusForbidden, r.status, r.raw)
	require.Equal(t, 1, r.body.Errors[0].Index)
	require.Zero(t, h.count(), "nothing of a refused request is stored")

	r = h.post(ingest.MediaJSON, websiteToken, strings.NewReader(note("s-4", "k", "website", "x")))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	r = h.post(ingest.MediaJSON, cronToken, strings.NewReader(note("s-5", "k", "", "x")))
	require.Equal(t, http.StatusAccepted, r.status, r.raw)
	msgs := h.stored()
	require.Len(t, msgs, 2)
	require.Equal(t, "website", decodeStored(t, msgs[0]).Source)
	require.Equal(t, "cron", decodeStored(t, msgs[1]).Source, "stamped when absent")
}

// TestDuplicateIDConflicts: a resend of the same event is a duplicate (202,
// the stored sequence); the same id with another key, another body or from
// another producer is a 409 naming the stored key and why, and the reply
// never carries the key that was sent.
func TestDuplicateIDConflicts(t *testing.T) {
	h := identityHarness(t)
	send := func(tok, body string) reply {
		t.Helper()
		return h.post(ingest.MediaJSON, tok, strings.NewReader(body))
	}
	first := send(websiteToken, note("c-1", "key-stored", "", "x"))
	require.Equal(t, http.StatusAccepted, first.status, first.raw)

	again := send(websiteToken, note("c-1", "key-stored", "website", "x"))
	require.Equal(t, http.StatusAccepted, again.status, again.raw)
	require.True(t, again.body.Results[0].Duplicate)
	require.Equal(t, first.body.Results[0].StreamSeq, again.body.Results[0].StreamSeq)
	require.Equal(t, "key-stored", again.body.Results[0].Key)

	spaced := strings.Replace(note("c-1", "key-stored", "", "x"), `{"text":"x"}`, `{ "text" : "x" }`, 1)
	require.Equal(t, http.StatusAccepted, send(websiteToken, spaced).status, "JSON-equal data is the same body")
	later := strings.Replace(note("c-1", "key-stored", "", "x"), "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", 1)
	r := send(websiteToken, later)
	require.Equal(t, http.StatusAccepted, r.status, "a re-run stamping a new occurred_at stays a duplicate: %s", r.raw)
	require.True(t, r.body.Results[0].Duplicate)

	for _, tc := range []struct{ name, tok, body, reason string }{
		{"another key", websiteToken, note("c-1", "key-sent", "", "x"), "another key"},
		{"another body", websiteToken, note("c-1", "key-stored", "", "changed"), "different body"},
		{"another producer", cronToken, note("c-1", "key-stored", "", "x"), "another producer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := send(tc.tok, tc.body)
			require.Equal(t, http.StatusConflict, r.status, r.raw)
			require.Equal(t, "key-stored", r.body.Results[0].Key)
			require.False(t, r.body.Results[0].Stored)
			require.False(t, r.body.Results[0].Duplicate)
			require.Contains(t, r.body.Results[0].Conflict, tc.reason)
			require.NotContains(t, r.raw, "key-sent")
		})
	}
	require.Equal(t, uint64(1), h.count())

	// In a batch: events before the conflict are stored, the conflicting
	// one is not, the ones after it (its key's next wave) are not sent.
	batch := note("b-1", "key-other", "", "x") + "\n" + note("c-1", "key-sent", "", "x") + "\n" +
		note("b-2", "key-sent", "", "x") + "\n"
	r = h.post(ingest.MediaNDJSON, websiteToken, strings.NewReader(batch))
	require.Equal(t, http.StatusConflict, r.status, r.raw)
	require.Equal(t, ingest.ErrConflict.Error(), strings.SplitN(r.body.Error, ":", 2)[0])
	require.True(t, r.body.Results[0].Stored)
	require.Equal(t, "key-stored", r.body.Results[1].Key)
	require.NotEmpty(t, r.body.Results[1].Conflict)
	require.False(t, r.body.Results[2].Stored)
	require.Contains(t, r.body.Results[2].Error, "not sent")
	require.Equal(t, uint64(2), h.count())
	require.Equal(t, uint64(4), h.svc.Stats().Conflicts)

	// The NATS endpoint answers the same, as micro error 409.
	m := nats.NewMsg(h.names.Config().Prefix + ".ingest.publish")
	m.Data = []byte(note("c-1", "key-sent", "", "x"))
	resp, err := h.nc.RequestMsg(m, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "409", resp.Header.Get(micro.ErrorCodeHeader))
	var body ingest.Response
	require.NoError(t, json.NewDecoder(bytes.NewReader(resp.Data)).Decode(&body))
	require.Equal(t, "key-stored", body.Results[0].Key)
}

// TestRetriedBatchIsAllDuplicates: resending a whole batch (after a 503 or
// a lost reply) is answered 202, every event a duplicate with its stored
// key and sequence (the lookups run concurrently).
func TestRetriedBatchIsAllDuplicates(t *testing.T) {
	h := identityHarness(t)
	var b strings.Builder
	for i := range 300 {
		b.WriteString(note("r-"+strconv.Itoa(i), "k-"+strconv.Itoa(i%7), "", "x") + "\n")
	}
	first := h.post(ingest.MediaNDJSON, websiteToken, strings.NewReader(b.String()))
	require.Equal(t, http.StatusAccepted, first.status, first.raw)
	again := h.post(ingest.MediaNDJSON, websiteToken, strings.NewReader(b.String()))
	require.Equal(t, http.StatusAccepted, again.status, again.raw)
	for i, r := range again.body.Results {
		require.True(t, r.Duplicate, i)
		require.Equal(t, "k-"+strconv.Itoa(i%7), r.Key)
		require.Equal(t, first.body.Results[i].StreamSeq, r.StreamSeq)
	}
	require.Equal(t, uint64(300), h.count())
	require.Equal(t, uint64(300), h.svc.Stats().Duplicates)
}
