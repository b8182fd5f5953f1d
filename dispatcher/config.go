package dispatcher

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// Config configures the dispatcher. YAML keys live under "dispatcher.".
// The zero value is not usable: call WithDefaults, then Validate.
type Config struct {
	// CRM is where requests are sent.
	CRM CRMConfig `yaml:"crm"`
	// Retry says how often a failing request is tried before the outlet is
	// paused.
	Retry RetryConfig `yaml:"retry"`
	// Pause is how long a partition's consumer is paused on the server after
	// Retry.Tries failures in a row; a larger Retry-After wins. While paused
	// nothing of the partition is delivered; the failing request stays at
	// the head and is tried again when the pause expires. Default 10s.
	Pause time.Duration `yaml:"pause"`
	// StatusPolicy says what a non-retryable 4xx answer does. Keys are "4xx"
	// (every 4xx) or an exact code such as "422" (wins over "4xx"); values
	// are "park" (the event is moved to the parked stream with the CRM's
	// status and response, its key is parked, and the partition goes on)
	// or "hold" (treated like any failure: the partition waits until the
	// CRM accepts). 401 (credentials: every key would park), 408 and 429
	// are always retried and cannot be configured. Default: {"4xx": "park"} (DefaultPolicy4xx), applied when
	// the map has no "4xx" key.
	StatusPolicy map[string]string `yaml:"status_policy"`
	// StepAside holds a failing key instead of its partition while the
	// CRM is only flaky (stepaside.go).
	StepAside StepAsideConfig `yaml:"step_aside"`
	// Inline has the enricher's lanes send each request right after they
	// mapped it (Outlet), instead of storing it in the dispatch stream for
	// the dispatcher's lanes: one consumer hop per event instead of two
	// (docs/scaling.md, measured). Retries, pauses, step-aside, parking
	// and the ledger work as below, on the enricher's lanes; the
	// dispatcher's own lanes only send what was in the dispatch stream
	// before the switch. Every process of a deployment must agree.
	// Default false.
	Inline bool `yaml:"inline"`
}

// CRMConfig is the CRM endpoint.
type CRMConfig struct {
	// URL is the CRM's base URL (http or https); each request's path is
	// appended to it. Required. When the built-in CRM simulator is used,
	// the command fills it with the simulator's address before Validate.
	// Credentials go in Headers, never in the URL.
	URL string `yaml:"url"`
	// Timeout bounds one request, response body included. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Headers are added to every request, e.g. Authorization. Their values
	// are never logged. They may override Content-Type and User-Agent, not
	// the Idempotency-Key or X-Sluice-* headers.
	Headers map[string]string `yaml:"headers"`
	// MaxIdleConnsPerHost is the keep-alive pool size of the shared HTTP
	// transport. Default 0: the number of partitions run here plus 4.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
	// RecordHeaders names answer headers (e.g. a CRM's human-readable
	// error header) kept in the ledger's attempt and delivered records,
	// so sluice trace shows them. Default none. Set-Cookie and the
	// authentication headers cannot be named.
	RecordHeaders []string `yaml:"record_headers"`
	// Auth authenticates every request: basic auth or OAuth2 (client
	// credentials or refresh token). Default none (crm.headers may carry
	// a static token).
	Auth AuthConfig `yaml:"auth"`
	// RateLimit caps the requests per second sent to the CRM, per process;
	// a 429 slows it down. Default none.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
}

// RetryConfig is the retry schedule of one request.
type RetryConfig struct {
	// Tries is how many failures in a row pause the outlet. Default 3.
	Tries int `yaml:"tries"`
	// Delay is the wait between tries; a larger Retry-After wins. Default
	// 2s, so the default 3 tries take about 4s (all within 6s).
	Delay time.Duration `yaml:"delay"`
}

// Status policies.
const (
	PolicyHold = "hold"
	PolicyPark = "park"
)

// DefaultPolicy4xx is the policy of a 4xx that StatusPolicy does not name.
// It is "park" because the lanes isolate parked keys (lane.Config
// IsolateKeys): every later event of the rejected key is parked behind it,
// so parking no longer lets a later event of that key overtake the rejected
// one, while "hold" would stall every other key of the partition behind one
// bad record until someone fixes it. `sluice parked replay KEY` sends the
// key's events again, in order, once the cause is fixed.
const DefaultPolicy4xx = PolicyPark

// DefaultTimeout is the default crm.timeout. The retry defaults (3 tries,
// 2s apart, then a 10s pause) are the dispatcher stage's registered retry
// policy (topology.StageSpecs).
const DefaultTimeout = 10 * time.Second

// WithDefaults returns c with zero fields set to their defaults.
// MaxIdleConnsPerHost stays 0: New turns it into partitions+4.
func (c Config) WithDefaults() Config {
	if c.CRM.Timeout == 0 {
		c.CRM.Timeout = DefaultTimeout
	}
	def, _ := topology.SpecOf(topology.StageDispatcher)
	if c.Retry.Tries == 0 {
		c.Retry.Tries = def.Retry.Tries
	}
	if c.Retry.Delay == 0 {
		c.Retry.Delay = def.Retry.Delay
	}
	if c.Pause == 0 {
		c.Pause = def.Retry.Pause
	}
	c.StepAside = c.StepAside.withDefaults()
	return c
}

// reservedHeaders are set by the dispatcher for each request and cannot be
// configured.
var reservedHeaders = map[string]bool{
	"Idempotency-Key": true, "Host": true, "Content-Length": true,
	"Transfer-Encoding": true, "Connection": true,
}

// Validate reports every invalid field, each named by its config key.
// Header values never appear in its errors.
func (c Config) Validate() error {
	var errs []error
	if err := validateURL(c.CRM.URL); err != nil {
		errs = append(errs, fmt.Errorf("dispatcher.crm.url: %w", err))
	}
	if c.CRM.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("dispatcher.crm.timeout: must be > 0"))
	}
	if c.CRM.MaxIdleConnsPerHost < 0 {
		errs = append(errs, fmt.Errorf("dispatcher.crm.max_idle_conns_per_host: must be >= 0"))
	}
	for _, name := range sortedKeys(c.CRM.Headers) {
		k := "dispatcher.crm.headers." + name
		canon := textproto.CanonicalMIMEHeaderKey(name)
		switch {
		case !validHeaderName(name):
			errs = append(errs, fmt.Errorf("%s: not a valid header name", k))
		case reservedHeaders[canon] || strings.HasPrefix(canon, "X-Sluice-"):
			errs = append(errs, fmt.Errorf("%s: set by the dispatcher, cannot be configured", k))
		case !validHeaderValue(c.CRM.Headers[name]):
			errs = append(errs, fmt.Errorf("%s: value contains control characters", k))
		}
	}
	errs = append(errs, c.CRM.Auth.validate(c.CRM.URL)...)
	if c.CRM.Auth.Type != AuthNone {
		for name := range c.CRM.Headers {
			if strings.EqualFold(name, "Authorization") {
				errs = append(errs, fmt.Errorf("dispatcher.crm.headers.%s: set by dispatcher.crm.auth; remove one", name))
			}
		}
	}
	if c.CRM.RateLimit.RPS < 0 || c.CRM.RateLimit.Burst < 0 {
		errs = append(errs, errors.New("dispatcher.crm.rate_limit: rps and burst must be >= 0"))
	}
	for i, name := range c.CRM.RecordHeaders {
		switch canon := textproto.CanonicalMIMEHeaderKey(name); {
		case !validHeaderName(name):
			errs = append(errs, fmt.Errorf("dispatcher.crm.record_headers[%d]: not a valid header name", i))
		case canon == "Set-Cookie" || canon == "Authorization" || canon == "Proxy-Authorization" || canon == "Www-Authenticate":
			errs = append(errs, fmt.Errorf("dispatcher.crm.record_headers[%d]: %s may carry secrets and is never recorded", i, canon))
		}
	}
	if c.Retry.Tries < 1 {
		errs = append(errs, fmt.Errorf("dispatcher.retry.tries: must be >= 1"))
	}
	if c.Retry.Delay <= 0 {
		errs = append(errs, fmt.Errorf("dispatcher.retry.delay: must be > 0"))
	}
	if c.Pause <= 0 {
		errs = append(errs, fmt.Errorf("dispatcher.pause: must be > 0"))
	}
	errs = append(errs, c.StepAside.validate())
	if c.StepAside.Enabled && c.Retry.Tries >= 1 && c.StepAside.InPlace >= c.Retry.Tries {
		// The retry.tries-th failure pauses the partition before the
		// request could step aside: every flaky request would pause it.
		errs = append(errs, fmt.Errorf("dispatcher.step_aside.in_place: must be < retry.tries (%d)", c.Retry.Tries))
	}
	for _, code := range sortedKeys(c.StatusPolicy) {
		k := "dispatcher.status_policy." + code
		if err := validPolicyKey(code); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		if v := c.StatusPolicy[code]; v != PolicyHold && v != PolicyPark {
			errs = append(errs, fmt.Errorf("%s: %q is not %s or %s", k, v, PolicyHold, PolicyPark))
		}
	}
	return errors.Join(errs...)
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("required (the CRM's base URL, http or https)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not contain credentials; put them in dispatcher.crm.headers")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	}
	return nil
}

func validPolicyKey(code string) error {
	if code == "4xx" {
		return nil
	}
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n < 400 || n > 499 {
		return errors.New(`key must be "4xx" or a status code 400-499`)
	}
	if def, _ := topology.SpecOf(topology.StageDispatcher); def.Retry.Retried(n) {
		return def.Retry.ErrRetried()
	}
	return nil
}

// retryPolicy is the dispatcher's retry policy: retry.tries failures in a
// row pause the outlet for pause; between them a fixed retry.delay.
func (c Config) retryPolicy() retry.Policy {
	return retry.Policy{Tries: c.Retry.Tries, Delay: c.Retry.Delay, Max: c.Retry.Delay, Pause: c.Pause}
}

// policyFor returns the policy for a 4xx status (not 408/429).
func (c Config) policyFor(status int) string {
	if p, ok := c.StatusPolicy[strconv.Itoa(status)]; ok {
		return p
	}
	if p, ok := c.StatusPolicy["4xx"]; ok {
		return p
	}
	return DefaultPolicy4xx
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue allows visible characters, spaces, tabs and non-ASCII
// bytes (obs-text), as net/http does.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
