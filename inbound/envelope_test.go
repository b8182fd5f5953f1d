package inbound_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

var envelopes = []*inbound.Envelope{
	nil, // today's {type, id} shape
	{Items: ".[]", Type: `"contact_updated"`, Key: `"contact:" + (.id|tostring)`},
	{Items: ".events[]", Type: ".kind", Key: ".ref", Version: ".rev", OccurredAt: ".at"},
	{Items: ".", Type: `$headers["x-event"]`, ID: `$headers["x-delivery"] + "/" + ($index|tostring)`},
}

func TestEnvelopeMapping(t *testing.T) {
	h := http.Header{"X-Event": {"deal_won"}, "X-Delivery": {"dl-9"}}
	for _, tc := range []struct {
		name     string
		env      *inbound.Envelope
		body     string
		delivery string
		want     []inbound.Item // Raw and Problems compared by presence
	}{
		{"legacy object takes the delivery id", nil, `{"type":"note_added","x":1}`, "msg_1",
			[]inbound.Item{{ID: "msg_1", Type: "note_added"}}},
		{"legacy batch", nil, `[{"type":"a","id":"1"},{"type":"b","id":"2"}]`, "msg_1",
			[]inbound.Item{{ID: "1", Type: "a"}, {Index: 1, ID: "2", Type: "b"}}},
		{"bare records: delivery id and index, never the record id", envelopes[1], `[{"id":42,"status":"won"},{"id":42,"status":"lost"}]`, "d-7",
			[]inbound.Item{{ID: "d-7#0", Type: "contact_updated", Key: "contact:42"}, {Index: 1, ID: "d-7#1", Type: "contact_updated", Key: "contact:42"}}},
		{"events with version and occurred_at", envelopes[2], `{"events":[{"kind":"deal_won","ref":"deal:1","rev":7,"at":"2026-01-02T03:04:05Z"}]}`, "d",
			[]inbound.Item{{ID: "d#0", Type: "deal_won", Key: "deal:1", Version: "7", OccurredAt: "2026-01-02T03:04:05Z"}}},
		{"guide, configuration B", &inbound.Envelope{Items: ".events[]", Type: `.kind | gsub("\\."; "_")`, ID: ".event_id",
			Key: `"deal:" + (.deal.id | tostring)`, Version: ".deal.rev", OccurredAt: ".at"},
			`{"events":[{"event_id":"ev_91","kind":"deal.won","deal":{"id":5,"stage":"won","rev":12},"at":"2026-03-01T10:00:00Z"}]}`, "",
			[]inbound.Item{{ID: "ev_91", Type: "deal_won", Key: "deal:5", Version: "12", OccurredAt: "2026-03-01T10:00:00Z"}}},
		{"type and id from headers", envelopes[3], `{"amount":5}`, "",
			[]inbound.Item{{ID: "dl-9/0", Type: "deal_won"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items, err := inbound.SplitBody(tc.env, []byte(tc.body), h, tc.delivery, "crm", 10)
			require.NoError(t, err)
			require.Len(t, items, len(tc.want))
			for i, it := range items {
				require.Empty(t, it.Problems)
				require.True(t, json.Valid(it.Raw))
				it.Raw, it.Problems, it.Whole = nil, nil, false
				require.Equal(t, tc.want[i], it)
			}
		})
	}
	// No delivery id: a hash of the source and the item; a retry maps to
	// the same ids, other content or another source to others.
	body := []byte(`[{"id":42,"status":"won"},{"id":42,"status":"lost"}]`)
	a, _ := inbound.SplitBody(envelopes[1], body, nil, "", "crm", 10)
	b, _ := inbound.SplitBody(envelopes[1], body, nil, "", "crm", 10)
	c, _ := inbound.SplitBody(envelopes[1], body, nil, "", "other", 10)
	require.Equal(t, a[0].ID, b[0].ID)
	require.NotEqual(t, a[0].ID, a[1].ID)
	require.NotEqual(t, a[0].ID, c[0].ID)
	require.True(t, strings.HasPrefix(a[0].ID, "sha256:"))
	// Unreadable bodies are one item with the whole body and the reason.
	for _, bad := range []string{``, `{"id":`, `[]`, `"x"`} {
		items, err := inbound.SplitBody(envelopes[1], []byte(bad), nil, "d", "crm", 10)
		require.NoError(t, err, bad)
		require.Len(t, items, 1, bad)
		require.NotEmpty(t, items[0].Problems, bad)
	}
	_, err := inbound.SplitBody(nil, []byte(`[{},{},{}]`), nil, "d", "crm", 2)
	require.ErrorIs(t, err, inbound.ErrTooMany)
	_, err = inbound.SplitBody(&inbound.Envelope{Items: ".[", Type: "nope("}, nil, nil, "", "crm", 2)
	require.Error(t, err)
}

var idOK = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)
var typeOK = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzEnvelope: any authenticated body maps to at least one item (or
// ErrTooMany): every item has a usable dedupe id, valid JSON or the whole
// body with the reason, a valid type unless it has problems; the mapping
// is deterministic (a CRM retry gets the same ids) and, without an id
// expression, never takes the record's own id.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","type":"note_added","data":{}}`, `[{"id":"a","type":"t"},{"id":"b","type":"t"}]`,
		`[{"id":42,"status":"won"}]`, `{"events":[{"kind":"k","ref":"r:1","rev":1.5,"at":"x"}]}`,
		`[]`, `[1,2]`, `null`, `"s"`, `{"id":"a b","type":"x.y"}`, `{"id":1e400}`, `[{"id":"` + strings.Repeat("z", 300) + `"}]`,
	} {
		for i := range envelopes {
			f.Add([]byte(s), "delivery-1", uint8(i), "deal_won")
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, delivery string, which uint8, event string) {
		env := envelopes[int(which)%len(envelopes)]
		h := http.Header{"X-Event": {event}, "X-Delivery": {delivery}}
		items, err := inbound.SplitBody(env, body, h, delivery, "crm", 20)
		if err != nil {
			if !errors.Is(err, inbound.ErrTooMany) {
				t.Fatalf("error other than too many: %v", err)
			}
			return
		}
		if len(items) == 0 || len(items) > 20 {
			t.Fatalf("%d items", len(items))
		}
		again, _ := inbound.SplitBody(env, body, h, delivery, "crm", 20)
		for i, it := range items {
			if !idOK.MatchString(it.ID) {
				t.Fatalf("item %d: unusable id %q", i, it.ID)
			}
			if it.ID != again[i].ID || it.Type != again[i].Type || it.Key != again[i].Key {
				t.Fatalf("item %d: not deterministic", i)
			}
			if len(it.Problems) == 0 {
				if !typeOK.MatchString(it.Type) || !json.Valid(it.Raw) {
					t.Fatalf("item %d: routed without a valid type or JSON: %+v", i, it)
				}
			} else if !json.Valid(it.Raw) && !bytes.Equal(it.Raw, body) {
				t.Fatalf("item %d: unreadable item keeps neither JSON nor the body", i)
			}
			if env == envelopes[1] {
				var rec map[string]any
				if json.Unmarshal(it.Raw, &rec) == nil {
					if rid, ok := rec["id"].(string); ok && rid == it.ID {
						t.Fatalf("item %d: the record id %q became the dedupe id", i, rid)
					}
				}
			}
		}
	})
}

// FuzzDeclarativeVerify: every declarative scheme refuses arbitrary
// headers without panicking, accepts a signature made by an independent
// signer for the same bytes (within the tolerance) and refuses it for any
// other body.
func FuzzDeclarativeVerify(f *testing.F) {
	f.Add([]byte(`[{"id":"42"}]`), []byte(`[{"id":"43"}]`), "hook-7", int64(0), "v1=abc,t=1", uint8(0))
	f.Add([]byte(``), []byte(`x`), "", int64(-400), "", uint8(1))
	f.Add([]byte(`{}`), []byte(`{} `), "a:b", int64(299), "t=,v1=,v1", uint8(2))
	f.Add([]byte(`a=1&b=2`), []byte(`a=1&b=3`), "x", int64(1<<40), "====", uint8(3))
	now := time.Unix(1_800_000_000, 0)
	type scheme struct {
		src  inbound.Source
		sign func(h http.Header, body []byte, id string, ts int64)
	}
	mac := func(key string, parts ...string) []byte {
		m := hmac.New(sha256.New, []byte(key))
		for _, p := range parts {
			m.Write([]byte(p))
		}
		return m.Sum(nil)
	}
	schemes := []scheme{
		{inbound.Source{Scheme: inbound.SchemeHMAC, Secrets: []string{"k1"}, Signature: inbound.Signature{Header: "X-Sig",
			Encoding: "base64", Embed: "{header:X-Hook}:{mac}"}},
			func(h http.Header, body []byte, id string, _ int64) {
				h.Set("X-Hook", id)
				h.Set("X-Sig", inbound.SignEmbedded("k1", body, id+":"))
			}},
		{inbound.Source{Scheme: "stripe", Secrets: []string{"k2"}},
			func(h http.Header, body []byte, _ string, ts int64) {
				t := strconv.FormatInt(ts, 10)
				h.Set("Stripe-Signature", "t="+t+",v1="+hex.EncodeToString(mac("k2", t, ".", string(body))))
			}},
		{inbound.Source{Scheme: "slack", Secrets: []string{"k3"}},
			func(h http.Header, body []byte, _ string, ts int64) {
				t := strconv.FormatInt(ts, 10)
				h.Set("X-Slack-Request-Timestamp", t)
				h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac("k3", "v0:", t, ":", string(body))))
			}},
		{inbound.Source{Scheme: inbound.SchemeHMAC, Secrets: []string{"k4"}, Signature: inbound.Signature{Header: "X-Sig",
			Encoding: "base64url", Embed: "{any}|{mac}", Signed: "{id}.{body}", IDHeader: "X-Id"}},
			func(h http.Header, body []byte, id string, _ int64) {
				h.Set("X-Id", id)
				b := append([]byte("anything|"), mac("k4", id, ".", string(body))...)
				h.Set("X-Sig", base64URL(b))
			}},
	}
	verifiers := make([]inbound.Verifier, len(schemes))
	for i, s := range schemes {
		v, err := inbound.NewVerifier(s.src, 5*time.Minute)
		if err != nil {
			f.Fatal(err)
		}
		verifiers[i] = v
	}
	f.Fuzz(func(t *testing.T, body, other []byte, id string, skew int64, junk string, which uint8) {
		i := int(which) % len(schemes)
		v := verifiers[i]
		// Arbitrary headers: refused or accepted, never a panic.
		for _, name := range []string{"X-Sig", "Stripe-Signature", "X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Hook", "X-Id"} {
			h := http.Header{name: {junk}, "X-Sig": {junk}}
			_, _ = v.Verify(h, body, now)
		}
		if skew > 1<<40 || skew < -(1<<40) {
			return
		}
		ts := now.Unix() + skew
		h := http.Header{}
		schemes[i].sign(h, body, id, ts)
		_, err := v.Verify(h, body, now)
		usesTS := i == 1 || i == 2
		inTol := skew >= -300 && skew <= 300
		idOK := !strings.ContainsAny(id, "\r\n\x00") && strings.TrimSpace(id) == id && id == h.Get(headerOf(i))
		if err != nil && (!usesTS || inTol) && idOK {
			t.Fatalf("scheme %d: own signature refused: %v", i, err)
		}
		if err == nil && usesTS && !inTol {
			t.Fatalf("scheme %d: accepted a timestamp %ds away", i, skew)
		}
		if !bytes.Equal(body, other) {
			if _, err := v.Verify(h, other, now); err == nil {
				t.Fatalf("scheme %d: signature of %q accepted for %q", i, body, other)
			}
		}
	})
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func headerOf(i int) string {
	switch i {
	case 0:
		return "X-Hook"
	case 3:
		return "X-Id"
	}
	return "X-Nothing"
}
