package crmsim_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"sluice.dev/crmsim"
)

func TestBareRecordsProfile(t *testing.T) {
	ids := map[string]int{}
	for n := 1; n <= 200; n++ {
		body := crmsim.BareRecords(7, n, 10)
		require.Equal(t, body, crmsim.BareRecords(7, n, 10), "deterministic")
		var recs []map[string]any
		require.NoError(t, json.Unmarshal(body, &recs))
		require.NotEmpty(t, recs)
		for _, r := range recs {
			require.NotContains(t, r, "type")
			require.NotContains(t, r, "version")
			ids[r["id"].(string)]++
		}
	}
	require.LessOrEqual(t, len(ids), 10, "record ids repeat")

	body := []byte(`[{"id":"1","status":"won"}]`)
	m := hmac.New(sha256.New, []byte("s3cret"))
	m.Write(body)
	raw, err := base64.StdEncoding.DecodeString(crmsim.SignBareRecords("s3cret", "hook-9", body))
	require.NoError(t, err)
	require.Equal(t, append([]byte("hook-9:"), m.Sum(nil)...), raw)
}

func TestWebhookSenderRetriesEveryFifth(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		raw, err := base64.StdEncoding.DecodeString(r.Header.Get(crmsim.HeaderCRMSignature))
		if err != nil || string(raw[:len("hook-1:")]) != "hook-1:" || r.Header.Get(crmsim.HeaderCRMWebhookID) != "hook-1" {
			w.WriteHeader(401)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.WriteHeader(202)
	}))
	defer srv.Close()
	_, err := crmsim.NewWebhookSender(crmsim.WebhookConfig{Profile: "nope", Secret: "x"}, nil, zerolog.Nop())
	require.Error(t, err)
	s, err := crmsim.NewWebhookSender(crmsim.WebhookConfig{Profile: crmsim.WebhookProfileBareRecords, Secret: "s",
		Interval: 5 * time.Millisecond}, func() string { return srv.URL }, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.Eventually(t, func() bool { return s.Sent() >= 12 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Stop(context.Background()))
	require.Zero(t, s.Failed())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, bodies[4], bodies[5], "delivery 5 is sent twice")
	require.NotEqual(t, bodies[3], bodies[4])
}
