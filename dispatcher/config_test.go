package dispatcher

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{CRM: CRMConfig{URL: "https://crm.example.com/api"}}.WithDefaults()
	require.Equal(t, 10*time.Second, c.CRM.Timeout)
	require.Equal(t, 3, c.Retry.Tries)
	require.Equal(t, 2*time.Second, c.Retry.Delay)
	require.Equal(t, 10*time.Second, c.Pause)
	require.Zero(t, c.CRM.MaxIdleConnsPerHost, "partitions+4 is decided by New")
	require.NoError(t, c.Validate())
	// "3 tries within 6s": the tries are (Tries-1)*Delay apart.
	require.LessOrEqual(t, time.Duration(c.Retry.Tries-1)*c.Retry.Delay, 6*time.Second)
	require.Equal(t, PolicyPark, c.policyFor(422), "4xx parks by default (keys are isolated)")

	// The shipped step-aside: 3 tries of a request (2 in place) before its
	// key steps aside, all within 6s; the circuit opens on 8 failures.
	d := DefaultConfig()
	d.CRM.URL = c.CRM.URL
	d = d.WithDefaults()
	require.NoError(t, d.Validate())
	require.Equal(t, 2, d.StepAside.InPlace)
	require.Less(t, d.StepAside.InPlace, d.Retry.Tries)
	require.Equal(t, 5*time.Millisecond, d.StepAside.InPlaceDelay)
	require.Equal(t, 8, d.StepAside.CircuitFailures)
	// A replayed request: 3 more in place, and its own tries stay below
	// the circuit.
	require.Equal(t, 3, d.StepAside.RoundInPlace)
	require.Less(t, d.StepAside.InPlace+d.StepAside.RoundInPlace+1, d.StepAside.CircuitFailures)
	// A config that lowered circuit_failures (the advice for a CRM that
	// fails that often) still loads: the lane caps a replayed request's
	// tries below the circuit instead.
	d.StepAside.CircuitFailures = 3
	require.NoError(t, d.Validate())
}

func TestConfigYAML(t *testing.T) {
	var c Config
	require.NoError(t, yaml.Unmarshal([]byte(`
crm:
  url: https://crm.example.com
  timeout: 3s
  headers: {Authorization: Bearer x}
  max_idle_conns_per_host: 8
retry: {tries: 5, delay: 500ms}
pause: 1m
status_policy: {"4xx": park, "409": hold}
`), &c))
	require.NoError(t, c.WithDefaults().Validate())
	require.Equal(t, 3*time.Second, c.CRM.Timeout)
	require.Equal(t, 500*time.Millisecond, c.Retry.Delay)
	require.Equal(t, time.Minute, c.Pause)
	require.Equal(t, PolicyPark, c.policyFor(422))
	require.Equal(t, PolicyHold, c.policyFor(409))
}

func TestConfigValidate(t *testing.T) {
	ok := func() Config { return Config{CRM: CRMConfig{URL: "http://localhost:8080"}}.WithDefaults() }
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"url missing", func(c *Config) { c.CRM.URL = "" }, "dispatcher.crm.url: required"},
		{"url scheme", func(c *Config) { c.CRM.URL = "ftp://x" }, `dispatcher.crm.url: scheme "ftp" is not http or https`},
		{"url no host", func(c *Config) { c.CRM.URL = "http://" }, "dispatcher.crm.url: has no host"},
		{"url relative", func(c *Config) { c.CRM.URL = "/api" }, "dispatcher.crm.url: scheme"},
		{"url credentials", func(c *Config) { c.CRM.URL = "https://u:pw@crm" }, "dispatcher.crm.url: must not contain credentials"},
		{"url query", func(c *Config) { c.CRM.URL = "https://crm/?a=1" }, "dispatcher.crm.url: must not have a query"},
		{"timeout", func(c *Config) { c.CRM.Timeout = -1 }, "dispatcher.crm.timeout: must be > 0"},
		{"idle", func(c *Config) { c.CRM.MaxIdleConnsPerHost = -1 }, "dispatcher.crm.max_idle_conns_per_host: must be >= 0"},
		{"tries", func(c *Config) { c.Retry.Tries = -1 }, "dispatcher.retry.tries: must be >= 1"},
		{"delay", func(c *Config) { c.Retry.Delay = -time.Second }, "dispatcher.retry.delay: must be > 0"},
		{"pause", func(c *Config) { c.Pause = -time.Second }, "dispatcher.pause: must be > 0"},
		{"in place too many", func(c *Config) { c.StepAside.Enabled, c.StepAside.InPlace = true, 3 },
			"dispatcher.step_aside.in_place: must be < retry.tries (3)"},
		{"round in place negative", func(c *Config) { c.StepAside.RoundInPlace = -1 },
			"dispatcher.step_aside.round_in_place: must be >= 0"},
		{"header name", func(c *Config) { c.CRM.Headers = map[string]string{"Bad Name": "v"} },
			"dispatcher.crm.headers.Bad Name: not a valid header name"},
		{"header reserved", func(c *Config) { c.CRM.Headers = map[string]string{"idempotency-key": "v"} },
			"dispatcher.crm.headers.idempotency-key: set by the dispatcher"},
		{"header sluice", func(c *Config) { c.CRM.Headers = map[string]string{"X-Sluice-Key": "v"} },
			"dispatcher.crm.headers.X-Sluice-Key: set by the dispatcher"},
		{"header value", func(c *Config) { c.CRM.Headers = map[string]string{"Authorization": "a\r\nb"} },
			"dispatcher.crm.headers.Authorization: value contains control characters"},
		{"policy key", func(c *Config) { c.StatusPolicy = map[string]string{"5xx": "park"} },
			`dispatcher.status_policy.5xx: key must be "4xx" or a status code 400-499`},
		{"policy code", func(c *Config) { c.StatusPolicy = map[string]string{"500": "park"} },
			"dispatcher.status_policy.500: key must be"},
		{"policy 429", func(c *Config) { c.StatusPolicy = map[string]string{"429": "park"} },
			"dispatcher.status_policy.429: 401, 408 and 429 are always retried"},
		{"policy value", func(c *Config) { c.StatusPolicy = map[string]string{"422": "drop"} },
			`dispatcher.status_policy.422: "drop" is not hold or park`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
	require.NoError(t, ok().Validate())
}
