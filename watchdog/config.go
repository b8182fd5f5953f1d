package watchdog

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"sluice.dev/mesh/topology"
)

// Config configures the watchdog. YAML keys live under "watchdog.". The
// zero value is not usable: call WithDefaults, then Validate.
type Config struct {
	// PollInterval is how often every lane's ConsumerInfo, the parked
	// stream and the services are checked. Default 5s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// PauseOverrun is how long a lane may still be reported paused after
	// its pause deadline before the watchdog resumes it. Default 5s.
	PauseOverrun time.Duration `yaml:"pause_overrun"`
	// MaxPause is the longest pause the watchdog lets stand: a lane whose
	// pause deadline lies further ahead is resumed (a bogus or forgotten
	// pause; an outlet pause is seconds). Raise it before pausing a lane by
	// hand for longer. A negative value disables the check. Default 1h.
	MaxPause time.Duration `yaml:"max_pause"`
	// StallAfter: a lane that has work (pending > 0), is not paused, has a
	// puller and neither acked nor delivered anything for this long is
	// stalled; its service is asked to restart it. Default 60s (above the
	// default ack_wait of 30s).
	StallAfter time.Duration `yaml:"stall_after"`
	// NoPullerAfter: a lane with work, not paused, with no waiting pull
	// request and no pinned client for this long has nobody pulling; its
	// service is asked to restart it. Default 30s.
	NoPullerAfter time.Duration `yaml:"no_puller_after"`
	// RedeliveryLoop: a lane whose head is redelivered on this many polls in
	// a row without the ack floor moving (and not paused) is in a
	// redelivery loop (a poison event or a lookup that never appears).
	// Default 10.
	RedeliveryLoop int `yaml:"redelivery_loop"`
	// ParkedRising is the window of the parked-events condition: it opens
	// when a lane parked an event for the operator since the last poll
	// (keys held for a retry do not count) and clears when none was parked
	// for this long. Default 5m.
	ParkedRising time.Duration `yaml:"parked_rising"`
	// ServiceSilentAfter: an expected service that has not answered
	// $SRV.PING for this long is silent. Default 15s.
	ServiceSilentAfter time.Duration `yaml:"service_silent_after"`
	// Services are the micro service names that must answer $SRV.PING.
	// Default sluice-ingest, sluice-enricher, sluice-dispatcher. Set it to
	// the services this deployment runs.
	Services []string `yaml:"services"`
	// RestartDelay is how long a Supervisor waits before restarting a
	// crashed service (--target all). Default 10s, as the seed did.
	RestartDelay time.Duration `yaml:"restart_delay"`
	// Recreate lets the watchdog recreate a deleted Sluice stream (from the
	// topology) or a deleted lane consumer it saw before. Default true.
	Recreate *bool `yaml:"recreate"`
	// Alerts tunes deduplication.
	Alerts AlertsConfig `yaml:"alerts"`
	// Slack sends alerts to a Slack incoming webhook.
	Slack SlackConfig `yaml:"slack"`
	// Webhook sends alerts as JSON to any HTTP endpoint.
	Webhook WebhookConfig `yaml:"webhook"`
	// Page is the live status page and its control endpoints.
	Page PageConfig `yaml:"page"`
}

// AlertsConfig tunes alert deduplication.
type AlertsConfig struct {
	// MinInterval is the shortest time between two messages about one
	// condition: an open condition is repeated ("still …") at most this
	// often, and one-off events of one kind are folded together. The
	// "recovered" message is always sent. Default 5m.
	MinInterval time.Duration `yaml:"min_interval"`
	// RecoverAfter is how long a condition must stay absent before it is
	// closed with a "recovered" message; a condition that comes back sooner
	// stays open, so a flapping lane does not flood the channel. Default 15s.
	RecoverAfter time.Duration `yaml:"recover_after"`
	// Timeout bounds one HTTP post to a sink. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// SlackConfig is a Slack incoming webhook.
type SlackConfig struct {
	// WebhookURL is the incoming-webhook URL (https://hooks.slack.com/…).
	// It is a secret: set it from SLUICE_WATCHDOG_SLACK_WEBHOOK_URL; it is
	// never logged. Empty disables Slack.
	WebhookURL string `yaml:"webhook_url"`
}

// WebhookConfig is a generic JSON webhook.
type WebhookConfig struct {
	// URL receives each alert as a JSON POST (see README). Treated as a
	// secret, never logged. Empty disables it.
	URL string `yaml:"url"`
}

// Defaults.
const (
	DefaultPollInterval       = 5 * time.Second
	DefaultPauseOverrun       = 5 * time.Second
	DefaultMaxPause           = time.Hour
	DefaultStallAfter         = 60 * time.Second
	DefaultNoPullerAfter      = 30 * time.Second
	DefaultRedeliveryLoop     = 10
	DefaultParkedRising       = 5 * time.Minute
	DefaultServiceSilentAfter = 15 * time.Second
	DefaultRestartDelay       = 10 * time.Second
	DefaultMinInterval        = 5 * time.Minute
	DefaultAlertTimeout       = 10 * time.Second
	DefaultRecoverAfter       = 15 * time.Second
)

// DefaultServices are the micro services checked when Services is empty:
// ingest and every stage that is not optional (topology.StageSpecs; an
// optional stage is added by `sluice run` when it runs).
var DefaultServices = defaultServices()

func defaultServices() []string {
	out := []string{"sluice-ingest"}
	for _, s := range topology.StageSpecs() {
		if !s.Optional {
			out = append(out, s.Service)
		}
	}
	return out
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.PauseOverrun, DefaultPauseOverrun)
	def(&c.MaxPause, DefaultMaxPause)
	def(&c.StallAfter, DefaultStallAfter)
	def(&c.NoPullerAfter, DefaultNoPullerAfter)
	def(&c.ParkedRising, DefaultParkedRising)
	def(&c.ServiceSilentAfter, DefaultServiceSilentAfter)
	def(&c.RestartDelay, DefaultRestartDelay)
	def(&c.Alerts.MinInterval, DefaultMinInterval)
	def(&c.Alerts.Timeout, DefaultAlertTimeout)
	def(&c.Alerts.RecoverAfter, DefaultRecoverAfter)
	c.Page = c.Page.WithDefaults()
	if c.RedeliveryLoop == 0 {
		c.RedeliveryLoop = DefaultRedeliveryLoop
	}
	if c.Services == nil {
		c.Services = append([]string(nil), DefaultServices...)
	}
	if c.Recreate == nil {
		t := true
		c.Recreate = &t
	}
	return c
}

// Validate reports every invalid field, each named by its config key.
// Webhook URLs never appear in its errors.
func (c Config) Validate() error {
	var errs []error
	pos := func(key string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("watchdog.%s: must be > 0", key))
		}
	}
	pos("poll_interval", c.PollInterval)
	pos("pause_overrun", c.PauseOverrun)
	pos("stall_after", c.StallAfter)
	pos("no_puller_after", c.NoPullerAfter)
	pos("parked_rising", c.ParkedRising)
	pos("service_silent_after", c.ServiceSilentAfter)
	pos("restart_delay", c.RestartDelay)
	pos("alerts.min_interval", c.Alerts.MinInterval)
	pos("alerts.timeout", c.Alerts.Timeout)
	pos("alerts.recover_after", c.Alerts.RecoverAfter)
	if c.RedeliveryLoop < 1 {
		errs = append(errs, errors.New("watchdog.redelivery_loop: must be >= 1"))
	}
	for i, s := range c.Services {
		if !validServiceName(s) {
			errs = append(errs, fmt.Errorf("watchdog.services[%d]: %q is not a micro service name (A-Z a-z 0-9 - _)", i, s))
		}
	}
	if err := validateWebhookURL(c.Slack.WebhookURL); err != nil {
		errs = append(errs, fmt.Errorf("watchdog.slack.webhook_url: %w", err))
	}
	if err := validateWebhookURL(c.Webhook.URL); err != nil {
		errs = append(errs, fmt.Errorf("watchdog.webhook.url: %w", err))
	}
	errs = append(errs, c.Page.Validate())
	return errors.Join(errs...)
}

func (c Config) recreate() bool { return c.Recreate == nil || *c.Recreate }

// validateWebhookURL checks an optional webhook URL without ever echoing
// it: the URL carries the secret.
func validateWebhookURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http or https URL")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}

func validServiceName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// laneStages are the stages whose lanes the watchdog polls; a stage without
// a stream in the topology is skipped.
var laneStages = topology.Stages()
