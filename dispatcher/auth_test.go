package dispatcher

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"sluice.dev/mesh/crmreq"
)

// tokenServer issues numbered tokens living ttl and counts the fetches;
// /api answers 401 to any token but the newest.
func tokenServer(t *testing.T, ttl time.Duration) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth/token" {
			require.NoError(t, r.ParseForm())
			id, secret, _ := r.BasicAuth()
			if id != "sluice" || secret != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
				return
			}
			k := n.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok" + string(rune('0'+k)), "token_type": "Bearer",
				"expires_in": int(ttl / time.Second)})
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok"+string(rune('0'+n.Load())) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"x"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func oauthCRM(t *testing.T, url, secret string) *crmClient {
	cfg := Config{CRM: CRMConfig{URL: url, Auth: AuthConfig{Type: AuthOAuth2, OAuth2: OAuth2Config{
		TokenURL: "/oauth/token", ClientID: "sluice", ClientSecret: secret, AuthStyle: "header"}}}}.WithDefaults()
	require.NoError(t, cfg.Validate())
	return newCRMClient(cfg.CRM, nil, 4)
}

func TestOAuth2TokenIsCachedAndOne401RefreshesOnce(t *testing.T) {
	srv, fetches := tokenServer(t, time.Hour)
	c := oauthCRM(t, srv.URL, "s3cret")
	ctx := context.Background()
	r := crmreq.Request{EventID: "e1", Type: "t", Key: "k"}
	for range 5 {
		res, err := c.do(ctx, r, http.MethodPost, "/api/x")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.Status)
	}
	require.EqualValues(t, 1, fetches.Load(), "the token is cached")

	// The server moves on (a revocation): every lane's next request gets
	// 401 at once; together they fetch one token.
	fetches.Add(1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			res, err := c.do(ctx, r, http.MethodPost, "/api/x")
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.Status)
		})
	}
	wg.Wait()
	require.EqualValues(t, 3, fetches.Load(), "one refresh for the 401 wave")
}

func TestOAuth2TokenReplacedBeforeExpiry(t *testing.T) {
	srv, fetches := tokenServer(t, 4*time.Second)
	c := oauthCRM(t, srv.URL, "s3cret")
	tc := c.auth.(*tokenCache)
	_, err := tc.header(context.Background())
	require.NoError(t, err)
	require.True(t, tc.fresh(time.Now()))
	require.False(t, tc.fresh(time.Now().Add(3100*time.Millisecond)), "a quarter of its life early (1s of 4s)")
	require.EqualValues(t, 1, fetches.Load())
}

func TestOAuth2ErrorsCarryNoSecret(t *testing.T) {
	srv, _ := tokenServer(t, time.Hour)
	c := oauthCRM(t, srv.URL, "wrong-secret-value")
	res, err := c.do(context.Background(), crmreq.Request{EventID: "e1", Type: "t", Key: "k"}, http.MethodPost, "/api/x")
	require.NoError(t, err)
	require.ErrorIs(t, res.Err, ErrCRMUnreachable)
	require.Contains(t, res.Err.Error(), "token endpoint answered 401")
	require.NotContains(t, res.Err.Error(), "wrong-secret-value")
	require.True(t, res.NotSent, "nothing reached the CRM: a create is not uncertain")
}

func TestAuthConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth AuthConfig
		hdrs map[string]string
		want string
	}{
		{"basic without user", AuthConfig{Type: AuthBasic}, nil, "dispatcher.crm.auth.username"},
		{"unknown type", AuthConfig{Type: "digest"}, nil, "dispatcher.crm.auth.type"},
		{"no token url", AuthConfig{Type: AuthOAuth2, OAuth2: OAuth2Config{ClientID: "a"}}, nil, "dispatcher.crm.auth.oauth2.token_url"},
		{"relative token url", AuthConfig{Type: AuthOAuth2, OAuth2: OAuth2Config{ClientID: "a", TokenURL: "oauth"}}, nil, "token_url"},
		{"refresh flow without token", AuthConfig{Type: AuthOAuth2, OAuth2: OAuth2Config{Flow: FlowRefreshToken, TokenURL: "/t"}}, nil, "refresh_token"},
		{"two authorizations", AuthConfig{Type: AuthBasic, Username: "u"}, map[string]string{"authorization": "x"}, "set by dispatcher.crm.auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{CRM: CRMConfig{URL: "https://crm.example.com", Auth: tc.auth, Headers: tc.hdrs}}.WithDefaults()
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	ok := Config{CRM: CRMConfig{URL: "https://crm.example.com", Auth: AuthConfig{Type: AuthOAuth2, OAuth2: OAuth2Config{
		ClientID: "a", ClientSecret: "topsecret", TokenURL: "https://login.example.com/token"}}}}.WithDefaults()
	require.NoError(t, ok.Validate())
	bad := ok
	bad.CRM.Auth.OAuth2.Flow = "password"
	require.NotContains(t, bad.Validate().Error(), "topsecret")
	require.True(t, strings.Contains(bad.Validate().Error(), "flow"))
}

func TestBasicAuthHeader(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	cfg := Config{CRM: CRMConfig{URL: srv.URL, Auth: AuthConfig{Type: AuthBasic, Username: "u", Password: "p"}}}.WithDefaults()
	c := newCRMClient(cfg.CRM, nil, 4)
	res, err := c.do(context.Background(), crmreq.Request{EventID: "e", Type: "t", Key: "k"}, http.MethodGet, "/x")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, res.Status, "basic auth has nothing to refresh: the 401 is the answer")
	require.Equal(t, "Basic dTpw", got)
}
