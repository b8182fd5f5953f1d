package dispatcher

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Auth types (dispatcher.crm.auth.type).
const (
	AuthNone   = ""
	AuthBasic  = "basic"
	AuthOAuth2 = "oauth2"
)

// OAuth2 flows (dispatcher.crm.auth.oauth2.flow).
const (
	FlowClientCredentials = "client_credentials"
	FlowRefreshToken      = "refresh_token"
)

// DefaultRefreshBefore is how long before its expiry an OAuth2 token is
// replaced (at most a quarter of the token's life).
const DefaultRefreshBefore = 30 * time.Second

// AuthConfig authenticates every CRM request. Secrets in it are never
// logged or shown; each has its environment variable
// (SLUICE_DISPATCHER_CRM_AUTH_PASSWORD,
// SLUICE_DISPATCHER_CRM_AUTH_OAUTH2_CLIENT_SECRET, …).
type AuthConfig struct {
	// Type is "" (none: crm.headers only), "basic" or "oauth2".
	Type string `yaml:"type"`
	// Username and Password of basic auth.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// OAuth2 configures type oauth2.
	OAuth2 OAuth2Config `yaml:"oauth2"`
}

// OAuth2Config is an OAuth2 client (golang.org/x/oauth2). The token is
// fetched once and cached, replaced RefreshBefore ahead of its expiry,
// and a 401 answer replaces it once and sends the request again.
type OAuth2Config struct {
	// Flow is "client_credentials" (default) or "refresh_token".
	Flow string `yaml:"flow"`
	// TokenURL is the token endpoint: an absolute http(s) URL, or a path
	// ("/oauth/token") appended to the CRM's host. Required.
	TokenURL string `yaml:"token_url"`
	// ClientID and ClientSecret identify Sluice to the token endpoint.
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
	// RefreshToken starts the refresh_token flow (a rotated one is kept
	// in memory for the process's life).
	RefreshToken string `yaml:"refresh_token"`
	// Scopes requested. Default none.
	Scopes []string `yaml:"scopes"`
	// AuthStyle is how the client authenticates: "header" (HTTP basic),
	// "params" (form fields) or "" (detected on first use).
	AuthStyle string `yaml:"auth_style"`
	// RefreshBefore: a token is replaced this long before it expires
	// (capped at a quarter of its life). Default 30s.
	RefreshBefore time.Duration `yaml:"refresh_before"`
}

func (c AuthConfig) validate(crmURL string) []error {
	var errs []error
	switch c.Type {
	case AuthNone:
	case AuthBasic:
		if c.Username == "" {
			errs = append(errs, errors.New("dispatcher.crm.auth.username: required for basic auth"))
		}
	case AuthOAuth2:
		o := c.OAuth2
		if o.Flow != "" && o.Flow != FlowClientCredentials && o.Flow != FlowRefreshToken {
			errs = append(errs, fmt.Errorf("dispatcher.crm.auth.oauth2.flow: %q is not %s or %s", o.Flow, FlowClientCredentials, FlowRefreshToken))
		}
		if _, err := tokenURL(crmURL, o.TokenURL); err != nil {
			errs = append(errs, fmt.Errorf("dispatcher.crm.auth.oauth2.token_url: %w", err))
		}
		if o.ClientID == "" && o.Flow != FlowRefreshToken {
			errs = append(errs, errors.New("dispatcher.crm.auth.oauth2.client_id: required for client_credentials"))
		}
		if o.Flow == FlowRefreshToken && o.RefreshToken == "" {
			errs = append(errs, errors.New("dispatcher.crm.auth.oauth2.refresh_token: required for flow refresh_token"))
		}
		switch o.AuthStyle {
		case "", "header", "params":
		default:
			errs = append(errs, fmt.Errorf("dispatcher.crm.auth.oauth2.auth_style: %q is not header or params", o.AuthStyle))
		}
		if o.RefreshBefore < 0 {
			errs = append(errs, errors.New("dispatcher.crm.auth.oauth2.refresh_before: must be >= 0"))
		}
	default:
		errs = append(errs, fmt.Errorf("dispatcher.crm.auth.type: %q is not basic or oauth2 (or empty)", c.Type))
	}
	return errs
}

// tokenURL resolves the token endpoint against the CRM's URL.
func tokenURL(crmURL, raw string) (string, error) {
	if raw == "" {
		return "", errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a valid URL")
	}
	if u.User != nil {
		return "", errors.New("must not contain credentials")
	}
	if u.IsAbs() {
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
		}
		return raw, nil
	}
	if !strings.HasPrefix(raw, "/") {
		return "", errors.New(`an absolute URL or a path starting with "/"`)
	}
	base, err := url.Parse(crmURL)
	if err != nil || base.Host == "" {
		return "", errors.New("a path needs a valid dispatcher.crm.url")
	}
	return base.Scheme + "://" + base.Host + raw, nil
}

// authorizer gives each request its Authorization header.
type authorizer interface {
	// header returns the Authorization value to send.
	header(ctx context.Context) (string, error)
	// rejected is told that the CRM answered 401 to value; it reports
	// whether a new credential is worth one more try.
	rejected(value string) bool
}

func newAuthorizer(cfg CRMConfig, client *http.Client) authorizer {
	switch cfg.Auth.Type {
	case AuthBasic:
		v := "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.Auth.Username+":"+cfg.Auth.Password))
		return staticAuth(v)
	case AuthOAuth2:
		return newTokenCache(cfg, client)
	}
	return nil
}

type staticAuth string

func (a staticAuth) header(context.Context) (string, error) { return string(a), nil }
func (a staticAuth) rejected(string) bool                   { return false }

// tokenCache holds one OAuth2 access token for every lane of the process.
// One fetch at a time: lanes that need a token while it is fetched wait
// for that one.
type tokenCache struct {
	fetch  func(ctx context.Context, refresh string) (*oauth2.Token, error)
	before time.Duration

	mu       sync.Mutex
	tok      *oauth2.Token
	got      time.Time
	refresh  string // current refresh token (refresh_token flow)
	fetches  atomic.Uint64
	rejects  atomic.Uint64
	lastFail atomic.Value // string: why the last fetch failed (no secrets)
}

func newTokenCache(cfg CRMConfig, client *http.Client) *tokenCache {
	o := cfg.Auth.OAuth2
	tu, _ := tokenURL(cfg.URL, o.TokenURL) // Validate checked it
	style := oauth2.AuthStyleAutoDetect
	switch o.AuthStyle {
	case "header":
		style = oauth2.AuthStyleInHeader
	case "params":
		style = oauth2.AuthStyleInParams
	}
	c := &tokenCache{before: o.RefreshBefore, refresh: o.RefreshToken}
	if c.before == 0 {
		c.before = DefaultRefreshBefore
	}
	withClient := func(ctx context.Context) context.Context {
		return context.WithValue(ctx, oauth2.HTTPClient, client)
	}
	if o.Flow == FlowRefreshToken {
		oc := &oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes,
			Endpoint: oauth2.Endpoint{TokenURL: tu, AuthStyle: style}}
		c.fetch = func(ctx context.Context, refresh string) (*oauth2.Token, error) {
			return oc.TokenSource(withClient(ctx), &oauth2.Token{RefreshToken: refresh}).Token()
		}
	} else {
		cc := &clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes,
			TokenURL: tu, AuthStyle: style}
		c.fetch = func(ctx context.Context, _ string) (*oauth2.Token, error) { return cc.Token(withClient(ctx)) }
	}
	return c
}

// fresh reports whether the cached token can still be sent.
func (c *tokenCache) fresh(now time.Time) bool {
	if c.tok == nil || c.tok.AccessToken == "" {
		return false
	}
	if c.tok.Expiry.IsZero() {
		return true
	}
	early := min(c.before, c.tok.Expiry.Sub(c.got)/4)
	return now.Add(early).Before(c.tok.Expiry)
}

func (c *tokenCache) header(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fresh(time.Now()) {
		got := time.Now()
		t, err := c.fetch(ctx, c.refresh)
		if err != nil {
			why := tokenError(err)
			c.lastFail.Store(why)
			return "", fmt.Errorf("%w: oauth2 token: %s", ErrCRMUnreachable, why)
		}
		c.fetches.Add(1)
		c.tok, c.got = t, got
		if t.RefreshToken != "" {
			c.refresh = t.RefreshToken
		}
	}
	return c.tok.Type() + " " + c.tok.AccessToken, nil
}

// rejected drops the cached token when it is the one the CRM refused
// (other lanes refused the same one: only the first drops it, so one 401
// wave costs one fetch).
func (c *tokenCache) rejected(value string) bool {
	c.rejects.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != nil && c.tok.Type()+" "+c.tok.AccessToken == value {
		c.tok = nil
	}
	return true
}

// tokenError says why a token fetch failed without echoing the endpoint's
// body (it may repeat what was sent).
func tokenError(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode != "":
		return "token endpoint answered " + strconv.Itoa(re.Response.StatusCode) + " " + re.ErrorCode
	case errors.As(err, &re):
		return "token endpoint answered " + strconv.Itoa(re.Response.StatusCode)
	case isTimeout(err):
		return "token endpoint timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return "token endpoint unreachable: " + ue.Err.Error()
	}
	return "token fetch failed"
}
