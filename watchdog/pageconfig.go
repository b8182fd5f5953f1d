package watchdog

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// PageConfig configures the live status page (YAML "watchdog.page.").
type PageConfig struct {
	// Addr is where the page listens. Empty: `sluice run` mounts it on the
	// ops listener (ops.addr, loopback by default) and the watchdog opens no
	// listener of its own. "off" disables the page. Any other value is a
	// host:port the watchdog listens on itself; keep it on loopback
	// (127.0.0.1:9091) unless a proxy in front of it does TLS.
	Addr string `yaml:"addr"`
	// Token is the operator token the control endpoints (pause, resume,
	// replay, discard) require as "Authorization: Bearer <token>". It is a
	// secret: set it from SLUICE_WATCHDOG_PAGE_TOKEN; it is never logged.
	// Empty disables the control endpoints (403); the read-only views are
	// still served.
	Token string `yaml:"token"`
	// TokenName is who the audit records name for actions taken with
	// Token. Default "operator".
	TokenName string `yaml:"token_name"`
	// LaggingPending: a lane with at least this many events waiting
	// (pending + ack pending) is shown as lagging. Default 100.
	LaggingPending uint64 `yaml:"lagging_pending"`
	// PauseFor is how long the page's Pause button pauses a lane. Default
	// 10m.
	PauseFor time.Duration `yaml:"pause_for"`
	// ReplayWait is how long a Replay waits per round for the lane to run
	// the replayed events. Default 10s.
	ReplayWait time.Duration `yaml:"replay_wait"`
	// AuditEvery is how often the watchdog audits the delivery ledger
	// itself (like `sluice audit --since <AuditWindow>`) and publishes the
	// summary the page shows. Default 10m; negative: never (the page then
	// shows the last `sluice audit` run). The first audit runs 30s after
	// start (or after AuditEvery, if shorter).
	AuditEvery time.Duration `yaml:"audit_every"`
	// AuditWindow is how far back each of those audits reaches. Default
	// 10m (= AuditEvery: together they cover all time).
	AuditWindow time.Duration `yaml:"audit_window"`
}

// Page defaults.
const (
	DefaultPageTokenName      = "operator"
	DefaultPageLaggingPending = 100
	DefaultPagePauseFor       = 10 * time.Minute
	DefaultPageReplayWait     = 10 * time.Second
	DefaultPageAuditEvery     = 10 * time.Minute
	DefaultPageAuditWindow    = 10 * time.Minute
	// PageAddrOff disables the status page.
	PageAddrOff = "off"
)

// WithDefaults returns c with zero fields set to their defaults.
func (c PageConfig) WithDefaults() PageConfig {
	if c.TokenName == "" {
		c.TokenName = DefaultPageTokenName
	}
	if c.LaggingPending == 0 {
		c.LaggingPending = DefaultPageLaggingPending
	}
	if c.PauseFor == 0 {
		c.PauseFor = DefaultPagePauseFor
	}
	if c.ReplayWait == 0 {
		c.ReplayWait = DefaultPageReplayWait
	}
	if c.AuditEvery == 0 {
		c.AuditEvery = DefaultPageAuditEvery
	}
	if c.AuditWindow == 0 {
		c.AuditWindow = DefaultPageAuditWindow
	}
	return c
}

// Validate reports every invalid field, named by its config key. The token
// never appears in its errors.
func (c PageConfig) Validate() error {
	var errs []error
	if c.Addr != "" && c.Addr != PageAddrOff {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("watchdog.page.addr: %q is not host:port, empty or \"off\"", c.Addr))
		}
	}
	if c.PauseFor <= 0 {
		errs = append(errs, errors.New("watchdog.page.pause_for: must be > 0"))
	}
	if c.ReplayWait <= 0 {
		errs = append(errs, errors.New("watchdog.page.replay_wait: must be > 0"))
	}
	if c.AuditWindow < 0 {
		errs = append(errs, errors.New("watchdog.page.audit_window: must be > 0"))
	}
	if c.Token != "" && len(c.Token) < 16 {
		errs = append(errs, errors.New("watchdog.page.token: must be at least 16 characters"))
	}
	return errors.Join(errs...)
}

// ownListener reports whether the watchdog listens for the page itself.
func (c PageConfig) ownListener() bool { return c.Addr != "" && c.Addr != PageAddrOff }
