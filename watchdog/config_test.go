package watchdog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"sluice.dev/watchdog"
)

func TestConfigDefaultsAndYAML(t *testing.T) {
	c := watchdog.Config{}.WithDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, 5*time.Second, c.PollInterval)
	require.Equal(t, 60*time.Second, c.StallAfter)
	require.Equal(t, 30*time.Second, c.NoPullerAfter)
	require.Equal(t, 15*time.Second, c.ServiceSilentAfter)
	require.Equal(t, 10*time.Second, c.RestartDelay)
	require.Equal(t, 5*time.Minute, c.Alerts.MinInterval)
	require.Equal(t, watchdog.DefaultServices, c.Services)

	var wrap struct {
		Watchdog watchdog.Config `yaml:"watchdog"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(`
watchdog:
  poll_interval: 2s
  stall_after: 90s
  services: [sluice-dispatcher]
  recreate: false
  alerts: {min_interval: 1m}
  slack: {webhook_url: "https://hooks.slack.com/services/X"}
  webhook: {url: "https://example.com/hook"}
`), &wrap))
	c = wrap.Watchdog.WithDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, 2*time.Second, c.PollInterval)
	require.Equal(t, 90*time.Second, c.StallAfter)
	require.Equal(t, []string{"sluice-dispatcher"}, c.Services)
	require.False(t, *c.Recreate)
	require.Equal(t, time.Minute, c.Alerts.MinInterval)
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		mut func(*watchdog.Config)
	}{
		{"watchdog.poll_interval", func(c *watchdog.Config) { c.PollInterval = -1 }},
		{"watchdog.stall_after", func(c *watchdog.Config) { c.StallAfter = -1 }},
		{"watchdog.redelivery_loop", func(c *watchdog.Config) { c.RedeliveryLoop = -1 }},
		{"watchdog.services[1]", func(c *watchdog.Config) { c.Services = []string{"ok", "bad name"} }},
		{"watchdog.alerts.min_interval", func(c *watchdog.Config) { c.Alerts.MinInterval = -1 }},
		{"watchdog.slack.webhook_url", func(c *watchdog.Config) { c.Slack.WebhookURL = "ftp://secret-token@x/y" }},
		{"watchdog.webhook.url", func(c *watchdog.Config) { c.Webhook.URL = "://secret-token" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c := watchdog.Config{}.WithDefaults()
			tc.mut(&c)
			err := c.Validate()
			require.ErrorContains(t, err, tc.key)
			require.NotContains(t, err.Error(), "secret-token", "a webhook URL leaked into an error")
		})
	}
}
