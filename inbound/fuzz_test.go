package inbound_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/inbound"
)

func TestVerifySchemes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x","type":"note_added"}`)
	std, err := inbound.NewVerifier(inbound.Source{Scheme: inbound.SchemeStandardWebhooks,
		Secrets: []string{"whsec_b2xk", secret}}, 5*time.Minute)
	require.NoError(t, err)
	h := http.Header{}
	require.NoError(t, inbound.SignHeaders(h, secret, "msg_1", now, body))
	id, err := std.Verify(h, body, now.Add(4*time.Minute))
	require.NoError(t, err)
	require.Equal(t, "msg_1", id)
	// Several signatures in the header (the CRM rotating): one match is enough.
	h.Set(inbound.HeaderWebhookSignature, "v1,bm9wZQ== v2,xyz "+h.Get(inbound.HeaderWebhookSignature))
	_, err = std.Verify(h, body, now)
	require.NoError(t, err)
	_, err = std.Verify(h, body, now.Add(6*time.Minute))
	require.ErrorIs(t, err, inbound.ErrTimestamp)
	_, err = std.Verify(h, append(body, ' '), now)
	require.ErrorIs(t, err, inbound.ErrSignature)

	for _, enc := range []string{"hex", "base64"} {
		v, err := inbound.NewVerifier(inbound.Source{Scheme: inbound.SchemeHMACSHA256, Secrets: []string{"old", "new"},
			Header: "X-Sig", Encoding: enc, Prefix: "sha256="}, time.Minute)
		require.NoError(t, err)
		h := http.Header{"X-Sig": {inbound.SignHMAC("new", body, enc, "sha256=")}}
		_, err = v.Verify(h, body, now)
		require.NoError(t, err, enc)
		h.Set("X-Sig", inbound.SignHMAC("new", body, enc, ""))
		_, err = v.Verify(h, body, now)
		require.ErrorIs(t, err, inbound.ErrSignature, "the prefix is required")
	}
	_, err = inbound.NewVerifier(inbound.Source{Scheme: "nope", Secrets: []string{"s"}}, time.Minute)
	require.ErrorIs(t, err, inbound.ErrUnknownScheme)
}

// FuzzVerify: the Standard Webhooks verifier never panics, accepts what
// Sign produced for the same bytes and refuses any other body.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"id":"a"}`), "msg_1", int64(0), "v1,AAAA", []byte(`{}`))
	f.Add([]byte(``), "", int64(-400), "", []byte(`x`))
	f.Add([]byte(`[1]`), "id.with.dots", int64(299), "v1,Zm9v v1,", []byte(`[1]`))
	f.Add([]byte(`{}`), "x", int64(1<<40), "v2,abc", []byte(`{} `))
	v, err := inbound.NewVerifier(inbound.Source{Scheme: inbound.SchemeStandardWebhooks, Secrets: []string{secret}}, 5*time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte, id string, skew int64, sig string, other []byte) {
		h := http.Header{}
		h.Set(inbound.HeaderWebhookID, id)
		h.Set(inbound.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix()+skew, 10))
		h.Set(inbound.HeaderWebhookSignature, sig)
		_, _ = v.Verify(h, body, now) // arbitrary headers: no panic
		good, err := inbound.Sign(secret, id, time.Unix(now.Unix()+skew, 0), body)
		if err != nil {
			t.Fatal(err)
		}
		h.Set(inbound.HeaderWebhookSignature, good)
		_, err = v.Verify(h, body, now)
		inTolerance := skew >= -300 && skew <= 300
		if id != "" && h.Get(inbound.HeaderWebhookID) == id && inTolerance && err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
		if err == nil && !inTolerance {
			t.Fatalf("accepted a timestamp %ds away", skew)
		}
		if string(other) != string(body) {
			if _, err := v.Verify(h, other, now); err == nil {
				t.Fatalf("signature of %q accepted for %q", body, other)
			}
		}
	})
}
