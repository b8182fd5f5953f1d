package crmsim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func startReal(t *testing.T, rc RealConfig) *Sim {
	s, err := New(Config{Profile: ProfileReal, Real: rc}, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func send(t *testing.T, s *Sim, method, path, body string, h map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, resp.Header, m
}

func TestRealProfileIgnoresIdempotencyKeyAndChecksDuplicates(t *testing.T) {
	s := startReal(t, RealConfig{Unique: map[string]string{"contacts": "email"}, ErrorHeader: "X-Crm-Error"})
	idem := map[string]string{"Idempotency-Key": "e1"}
	st, _, b := send(t, s, "POST", "/api/deals", `{"external_id":"d1","seq":1}`, idem)
	require.Equal(t, 201, st)
	require.Equal(t, "deals-1", b["id"])
	st, _, _ = send(t, s, "POST", "/api/deals", `{"external_id":"d1","seq":1}`, idem)
	require.Equal(t, 201, st, "the same Idempotency-Key creates again")
	st, _, b = send(t, s, "GET", "/api/deals?external_id=d1", "", nil)
	require.Equal(t, 200, st)
	require.Len(t, b["data"], 2)

	st, _, _ = send(t, s, "POST", "/api/contacts", `{"email":"a@x","seq":1}`, nil)
	require.Equal(t, 201, st)
	st, h, b := send(t, s, "POST", "/api/contacts", `{"email":"a@x","seq":2}`, nil)
	require.Equal(t, 409, st)
	require.Equal(t, "contacts-1", b["existing_id"])
	require.Equal(t, "duplicate email", h.Get("X-Crm-Error"))

	st, _, b = send(t, s, "PATCH", "/api/contacts/contacts-1", `{"name":"A"}`, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "a@x", b["email"], "a patch keeps the other fields")
	require.Len(t, s.RealRecords(), 3)
	require.Len(t, s.RealRecords()[2].Writes, 2)
}

func TestRealProfileDropsAnswersAfterCommitting(t *testing.T) {
	s := startReal(t, RealConfig{DropAfterCommit: 1})
	req, err := http.NewRequest("POST", s.URL()+"/api/deals", strings.NewReader(`{"x":1}`))
	require.NoError(t, err)
	req.Header.Set("X-Sluice-Event-Id", "deal:1#1")
	_, err = http.DefaultClient.Do(req)
	require.Error(t, err, "no answer")
	require.Len(t, s.RealRecords(), 1, "but the record is stored")
	require.Equal(t, []string{"deal:1#1"}, s.RealStats().Dropped)
}

func TestRealProfileOAuth2AndQuota(t *testing.T) {
	s := startReal(t, RealConfig{OAuth2: &OAuth2Server{TokenTTL: time.Hour}, Quota: Quota{Requests: 2, Window: time.Hour}})
	st, h, _ := send(t, s, "GET", "/api/deals", "", nil)
	require.Equal(t, 401, st)
	require.Contains(t, h.Get("WWW-Authenticate"), "invalid_token")

	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"sluice"}, "client_secret": {"wrong"}}.Encode()
	ct := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	st, _, _ = send(t, s, "POST", "/oauth/token", form, ct)
	require.Equal(t, 401, st)
	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"sluice-refresh"}}.Encode()
	st, _, b := send(t, s, "POST", "/oauth/token", form, ct)
	require.Equal(t, 200, st)
	bearer := map[string]string{"Authorization": "Bearer " + b["access_token"].(string)}
	st, _, _ = send(t, s, "GET", "/api/deals", "", bearer)
	require.Equal(t, 200, st)

	s.RevokeTokens()
	st, _, _ = send(t, s, "GET", "/api/deals", "", bearer)
	require.Equal(t, 401, st, "revoked")
	form = url.Values{"grant_type": {"client_credentials"}, "client_id": {"sluice"}, "client_secret": {"sluice-secret"}}.Encode()
	_, _, b = send(t, s, "POST", "/oauth/token", form, ct)
	bearer["Authorization"] = "Bearer " + b["access_token"].(string)
	st, _, _ = send(t, s, "GET", "/api/deals", "", bearer)
	require.Equal(t, 200, st)
	st, h, _ = send(t, s, "GET", "/api/deals", "", bearer)
	require.Equal(t, 429, st, "quota of 2 per window")
	require.Equal(t, "3600", h.Get("Retry-After"))
	require.Equal(t, 2, s.RealStats().TokensIssued)
}

func TestRealProfileConfig(t *testing.T) {
	_, err := New(Config{Profile: "hubspot"}, zerolog.Nop())
	require.ErrorContains(t, err, "simulator.profile")
	_, err = New(Config{Profile: ProfileReal, Real: RealConfig{DropAfterCommit: 2}}, zerolog.Nop())
	require.ErrorContains(t, err, "simulator.real.drop_after_commit")
}
