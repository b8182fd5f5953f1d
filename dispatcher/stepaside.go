package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
)

// StepAsideConfig is the retry hold of one key (lane.StepAside): a request
// the CRM answers with a 5xx, 408, 429 or not at all, while the partition's
// other requests succeed, is first retried in place (InPlace tries,
// InPlaceDelay apart) and then steps aside — its key is held and retried
// after Backoff, in order, and the partition's other keys go on. CircuitFailures
// failures in a row within CircuitWindow of each other (a CRM that is down,
// not flaky) open the partition's circuit: the lane holds its head again,
// retry.tries tries (retry.delay apart) then a pause of pause with an alert,
// and a probe (the failed request again, every ProbeEvery) ends the pause as
// soon as the CRM answers. YAML: dispatcher.step_aside.
type StepAsideConfig struct {
	// Enabled turns step-aside on. Default true (DefaultConfig); false
	// holds the whole partition for every failed request, as before.
	Enabled bool `yaml:"enabled"`
	// Backoff is the wait before a held key's next try after its 1st, 2nd,
	// ... failure; the last entry repeats. Default [200ms, 1s, 3s].
	Backoff []time.Duration `yaml:"backoff"`
	// CircuitFailures failures in a row (no success between, in-place
	// tries included) open the partition's circuit. Default 8: a CRM that
	// is down fails them within a few hundred milliseconds, while a CRM
	// failing 30 % of requests at random runs 8 in a row once in ~20,000
	// requests (3 in a row: once in ~50, each time holding the partition).
	CircuitFailures int `yaml:"circuit_failures"`
	// CircuitWindow is the longest gap between two of those failures.
	// Default 6s.
	CircuitWindow time.Duration `yaml:"circuit_window"`
	// ProbeEvery is how often a paused partition sends its failed request
	// again; the first 2xx resumes it. Default 1s.
	ProbeEvery time.Duration `yaml:"probe_every"`
	// InPlace is how many failures of a request are retried in place,
	// InPlaceDelay later, before it steps aside: quick retries absorb most
	// of a flaky CRM's random errors without parking anything. The lane
	// keeps the message in hand for them (no nak, no redelivery).
	// DefaultConfig sets 2, so a request is tried 3 times (the seed's "3
	// tries") before its key steps aside; 0 steps aside at the first
	// failure.
	InPlace int `yaml:"in_place"`
	// InPlaceDelay is the wait before an in-place retry. Default 5ms.
	InPlaceDelay time.Duration `yaml:"in_place_delay"`
	// RoundInPlace is how many more in-place tries a replayed request (a
	// held key's round, or an operator's replay) gets before it steps
	// aside again. A request stepping aside in a round parks the rest of
	// the round behind it once more: under 30 % random 5xx a round of
	// dozens of requests broke every few dozen (3 failures in a row,
	// 2.7 % each) and the chaos suite parked two messages for every one it
	// delivered. DefaultConfig sets 3 (6 tries in ~25ms, 0.07 % at 30 %).
	// The tries in place are capped at circuit_failures - 2 in all, so
	// that a replayed request never opens the circuit by itself (a config
	// with a low circuit_failures keeps the old behaviour).
	RoundInPlace int `yaml:"round_in_place"`
}

// Step-aside defaults.
var (
	DefaultStepAsideBackoff = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}
)

// Defaults of step-aside.
const (
	DefaultCircuitFailures = 8
	DefaultCircuitWindow   = 6 * time.Second
	DefaultProbeEvery      = time.Second
	DefaultInPlace         = 2
	DefaultInPlaceDelay    = 5 * time.Millisecond
	DefaultRoundInPlace    = 3
)

// DefaultConfig is the config before a file is read: step-aside on.
func DefaultConfig() Config {
	return Config{StepAside: StepAsideConfig{Enabled: true, InPlace: DefaultInPlace, RoundInPlace: DefaultRoundInPlace}}
}

func (c StepAsideConfig) withDefaults() StepAsideConfig {
	if len(c.Backoff) == 0 {
		c.Backoff = DefaultStepAsideBackoff
	}
	if c.CircuitFailures == 0 {
		c.CircuitFailures = DefaultCircuitFailures
	}
	if c.CircuitWindow == 0 {
		c.CircuitWindow = DefaultCircuitWindow
	}
	if c.ProbeEvery == 0 {
		c.ProbeEvery = DefaultProbeEvery
	}
	if c.InPlaceDelay == 0 {
		c.InPlaceDelay = DefaultInPlaceDelay
	}
	return c
}

func (c StepAsideConfig) validate() error {
	var errs []error
	for i, d := range c.Backoff {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("dispatcher.step_aside.backoff[%d]: must be > 0", i))
		}
	}
	if c.CircuitFailures < 1 {
		errs = append(errs, errors.New("dispatcher.step_aside.circuit_failures: must be >= 1"))
	}
	if c.CircuitWindow <= 0 {
		errs = append(errs, errors.New("dispatcher.step_aside.circuit_window: must be > 0"))
	}
	if c.ProbeEvery <= 0 {
		errs = append(errs, errors.New("dispatcher.step_aside.probe_every: must be > 0"))
	}
	if c.InPlace < 0 {
		errs = append(errs, errors.New("dispatcher.step_aside.in_place: must be >= 0"))
	}
	if c.RoundInPlace < 0 {
		errs = append(errs, errors.New("dispatcher.step_aside.round_in_place: must be >= 0"))
	}
	if c.InPlaceDelay <= 0 {
		errs = append(errs, errors.New("dispatcher.step_aside.in_place_delay: must be > 0"))
	}
	return errors.Join(errs...)
}

// lane is the lane runner's form of c.
func (c StepAsideConfig) lane() lane.StepAside {
	return lane.StepAside{Enabled: c.Enabled, Backoff: c.Backoff, CircuitFailures: c.CircuitFailures,
		CircuitWindow: c.CircuitWindow, InPlace: c.InPlace, RoundInPlace: c.RoundInPlace}
}

// headDelay is the wait before a held head's next try after its
// failures-th earlier failure: retry.delay, or with step-aside on
// step_aside.in_place_delay for the inPlace tries in place (5ms; a
// replayed request has round_in_place more, lane.StepAside.InPlaceTries)
// and then the fast, backed-off schedule of step_aside.backoff (200ms, 1s,
// ...), so that a CRM that is down still pauses the outlet after
// retry.tries tries within a second or so.
func (s *Service) headDelay(failures, inPlace int) time.Duration {
	b := s.cfg.StepAside.Backoff
	if !s.cfg.StepAside.Enabled || len(b) == 0 {
		return s.cfg.Retry.Delay
	}
	if failures < inPlace {
		return s.cfg.StepAside.InPlaceDelay
	}
	return b[min(failures-inPlace, len(b)-1)]
}

// probe is a paused lane's probe: the failed request again, with its
// Idempotency-Key. Any answer but a transient failure (5xx, 408, 429, 401,
// no answer) ends the pause: the CRM is back. A 2xx means the CRM applied
// the request: the answer is kept (probeAnswers) and the lane's next try of
// the message uses it instead of sending the request a second time. Any
// other answer is not kept: the lane sends the request again and handles
// that answer. A create that may already have been applied (uncertain) is
// looked up first when crm.find is configured, as the lane does: found,
// the pause ends and the lane adopts the record; not found, the probe
// creates it. A create whose probe got no answer is uncertain, as after
// the lane's own tries. No probe is sent before the CRM's Retry-After (of
// the failure that paused the lane, then of each probe's answer) has
// passed: a CRM enforcing a quota is not asked again every probe_every.
func (s *Service) probe(r crmreq.Request, method, path, kind string, retryAfter time.Duration) func(context.Context) error {
	notBefore := time.Now().Add(retryAfter)
	return func(ctx context.Context) error {
		if wait := time.Until(notBefore); wait > 0 {
			return fmt.Errorf("the CRM asked to wait %s more (Retry-After); not probing yet", wait.Round(time.Millisecond))
		}
		if kind == kindCreate && r.Find != nil && s.uncertain.has(r.EventID) {
			found, err := s.probeLookup(ctx, r, &notBefore)
			if err != nil || found {
				return err
			}
		}
		res, err := s.crm.do(ctx, r, method, path)
		waitRetryAfter(res, &notBefore)
		if err == nil && kind == kindCreate && uncertainOutcome(res) {
			s.uncertain.add(r.EventID)
		}
		if err == nil && res.Err == nil && res.Status/100 == 2 && kind != kindFind {
			// A lookup changes nothing at the CRM: the lane runs it again.
			s.probed.put(r.EventID, method, path, res)
		}
		return s.probeResult(res, err)
	}
}

// probeLookup is the crm.find of an uncertain create's probe: found
// reports a record the lane will adopt; an error keeps the lane paused.
func (s *Service) probeLookup(ctx context.Context, r crmreq.Request, notBefore *time.Time) (found bool, err error) {
	_, code, res, err := s.sendFind(ctx, r)
	if code == nil {
		return true, nil // the find cannot be built: the lane parks the request
	}
	waitRetryAfter(res, notBefore)
	if err := s.probeResult(res, err); err != nil {
		return false, err
	}
	if res.Status/100 != 2 {
		return res.Status != http.StatusNotFound, nil // any other answer: the lane handles it
	}
	id, err := findID(ctx, code, res.Body)
	return id != "" || err != nil, nil
}

// waitRetryAfter moves notBefore to the Retry-After of a probe's 429 or
// 5xx answer.
func waitRetryAfter(res response, notBefore *time.Time) {
	if res.Err != nil || (res.Status != http.StatusTooManyRequests && res.Status < 500) {
		return
	}
	if ra, ok := ParseRetryAfter(res.Header.Get("Retry-After"), time.Now()); ok && ra > 0 {
		*notBefore = time.Now().Add(ra)
	}
}

// probeResult is what a probe's answer means for the pause: nil ends it.
func (s *Service) probeResult(res response, err error) error {
	switch {
	case err != nil:
		return err
	case res.Err != nil:
		return res.Err
	case res.Status >= 500 || s.RetryPolicy().Retried(res.Status):
		return &StatusError{Status: res.Status}
	}
	return nil
}
