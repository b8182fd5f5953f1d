package crmsim

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"time"
)

// Config configures a Sim. The zero value plus WithDefaults is a healthy,
// fast CRM on a free loopback port.
type Config struct {
	// Addr is the host:port the sim listens on. Default "127.0.0.1:0" (a
	// free port; read it back with URL).
	Addr string `yaml:"addr" json:"addr"`
	// ErrorRate is the fraction (0..1) of requests answered 503 before they
	// are applied. Default 0.
	ErrorRate float64 `yaml:"error_rate" json:"error_rate"`
	// Latency is added to every answer; Jitter adds a uniform random
	// 0..Jitter on top. Defaults 0.
	Latency time.Duration `yaml:"latency" json:"latency"`
	Jitter  time.Duration `yaml:"jitter" json:"jitter"`
	// Seed seeds the generator that picks which requests get an injected
	// 503, so a sequential client sees the same failures run after run.
	// Default 0 (a fixed seed, not a random one).
	Seed int64 `yaml:"seed" json:"seed"`
	// RetryAfter, when set, is sent as the Retry-After header of every 503
	// and 429 the sim answers (e.g. "1" or an HTTP date). Default none.
	RetryAfter string `yaml:"retry_after" json:"retry_after"`
	// Reject maps an event id (X-Sluice-Event-Id, or Idempotency-Key when
	// that header is absent) to the 4xx status every request for it gets,
	// e.g. {"customer:7#3": 422}. Default none.
	Reject map[string]int `yaml:"reject" json:"reject"`
	// RecordCapacity is how many request records are preallocated; more
	// are added in chunks without copying. Set it near the expected request
	// count of a benchmark. Default 65536.
	RecordCapacity int `yaml:"record_capacity" json:"record_capacity"`
	// Profile is "" (default: an idempotent CRM that honours
	// Idempotency-Key) or "real" (ProfileReal: a CRM like the real ones,
	// configured by Real).
	Profile string `yaml:"profile" json:"profile"`
	// Real configures the "real" profile.
	Real RealConfig `yaml:"real" json:"real"`
	// Webhooks configures the webhooks the sim posts back (webhooks.go).
	// Default: none.
	Webhooks WebhookConfig `yaml:"webhooks" json:"webhooks"`
	// StateFile, if set, keeps the records the sim creates (their CRM ids
	// and Idempotency-Keys) in this file, so a restarted sim still knows
	// them: updates of records created before the restart succeed, and a
	// retried create gets its id back. Default none: the sim forgets
	// everything when it stops. `sluice run` keeps the built-in simulator's
	// in <data_dir>/crmsim-records.jsonl. Default profile only.
	StateFile string `yaml:"state_file" json:"state_file"`
}

// DefaultRecordCapacity is the default of Config.RecordCapacity.
const DefaultRecordCapacity = 1 << 16

// WithDefaults returns c with zero fields set to their defaults. Reject is
// copied, so later changes to the caller's map do not reach the sim.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.RecordCapacity == 0 {
		c.RecordCapacity = DefaultRecordCapacity
	}
	c.Reject = maps.Clone(c.Reject)
	if c.Profile == ProfileReal {
		c.Real = c.Real.withDefaults()
	}
	c.Webhooks = c.Webhooks.WithDefaults()
	return c
}

// Validate reports every invalid field, named by its config key.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("simulator.addr: %q is not host:port: %w", c.Addr, err))
	}
	if err := checkRate(c.ErrorRate); err != nil {
		errs = append(errs, fmt.Errorf("simulator.error_rate: %w", err))
	}
	if c.Latency < 0 {
		errs = append(errs, fmt.Errorf("simulator.latency: %s must be >= 0", c.Latency))
	}
	if c.Jitter < 0 {
		errs = append(errs, fmt.Errorf("simulator.jitter: %s must be >= 0", c.Jitter))
	}
	for id, st := range c.Reject {
		if st < 400 || st > 499 {
			errs = append(errs, fmt.Errorf("simulator.reject[%q]: status %d must be a 4xx", id, st))
		}
	}
	if c.RecordCapacity < 0 {
		errs = append(errs, fmt.Errorf("simulator.record_capacity: %d must be >= 0", c.RecordCapacity))
	}
	switch c.Profile {
	case "":
	case ProfileReal:
		errs = append(errs, c.Real.validate())
	default:
		errs = append(errs, fmt.Errorf("simulator.profile: %q is not %q", c.Profile, ProfileReal))
	}
	if c.Webhooks.Profile != WebhookProfileNone {
		errs = append(errs, c.Webhooks.Validate())
	}
	return errors.Join(errs...)
}

func checkRate(f float64) error {
	if !(f >= 0 && f <= 1) { // also catches NaN
		return fmt.Errorf("%v must be between 0 and 1", f)
	}
	return nil
}
