package lane

import (
	"errors"
	"time"
)

// StepAside configures per-key retry holds (hold.go). The zero value is
// off.
type StepAside struct {
	// Enabled turns step-aside on. It needs IsolateKeys.
	Enabled bool
	// Backoff is the wait before a held key's next try after its n-th
	// failure (n from 0); the last entry repeats. Default 200ms, 1s, 3s.
	Backoff []time.Duration
	// CircuitFailures failures in a row open the partition's circuit.
	// Default 3.
	CircuitFailures int
	// CircuitWindow is the longest gap between two of those failures.
	// Default 6s.
	CircuitWindow time.Duration
	// AlertAfter is the failure count of a held key that raises a
	// "key_held" alert (once per key and process). Default 5.
	AlertAfter int
	// InPlace is how many failures of a message are retried in place (the
	// handler's delay, the partition waiting) before it steps aside: one
	// quick retry absorbs most random errors of a flaky dependency without
	// the parked-stream round trip. Default 0 (step aside at the first).
	InPlace int
	// RoundInPlace is how many more failures a replayed message (a held
	// key's round, or an operator's replay) retries in place before it
	// steps aside. Stepping aside in a round parks the rest of the round
	// behind it again: under a CRM failing 30 % of requests a round of
	// dozens of messages broke every few dozen, and each break parked and
	// replayed the rest once more. In all at most CircuitFailures - 2
	// tries in place (InPlaceTries). Default 0.
	RoundInPlace int
}

// InPlaceTries is how many failures of m are retried in place before it
// steps aside: InPlace, plus RoundInPlace for a replayed message, capped
// so that a replayed message's own failures (in-place tries and the one
// that steps aside) stay below CircuitFailures: reaching it, they would
// open the circuit and hold the partition instead of stepping aside. A
// handler that picks its own retry delays uses it to tell an in-place
// retry (m.Failures below it) from the step-aside schedule.
func (s StepAside) InPlaceTries(m *Msg) int {
	if s.RoundInPlace == 0 || !m.Replayed() {
		return s.InPlace
	}
	n := s.InPlace + s.RoundInPlace
	if s.CircuitFailures > 0 {
		n = min(n, s.CircuitFailures-2)
	}
	return max(n, s.InPlace)
}

func (s StepAside) withDefaults() StepAside {
	if len(s.Backoff) == 0 {
		s.Backoff = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}
	}
	if s.CircuitFailures == 0 {
		s.CircuitFailures = 3
	}
	if s.CircuitWindow == 0 {
		s.CircuitWindow = 6 * time.Second
	}
	if s.AlertAfter == 0 {
		s.AlertAfter = 5
	}
	return s
}

func (s StepAside) validate(isolate bool) error {
	if !s.Enabled {
		return nil
	}
	if !isolate {
		return errors.New("lane: StepAside needs IsolateKeys")
	}
	for _, d := range s.Backoff {
		if d <= 0 {
			return errors.New("lane: StepAside.Backoff entries must be > 0")
		}
	}
	if s.InPlace < 0 || s.RoundInPlace < 0 {
		return errors.New("lane: StepAside.InPlace and RoundInPlace must be >= 0")
	}
	if s.CircuitFailures < 1 || s.CircuitWindow <= 0 {
		return errors.New("lane: StepAside.CircuitFailures must be >= 1 and CircuitWindow > 0")
	}
	return nil
}

// backoff is the wait after a held key's failures-th failure (from 1).
func (s StepAside) backoff(failures int) time.Duration {
	i := min(max(failures-1, 0), len(s.Backoff)-1)
	return s.Backoff[i]
}

// circuit is a lane's run of failures that may step aside.
type circuit struct {
	streak int
	last   time.Time
}

// failure counts one and reports whether the circuit is now open.
func (c *circuit) failure(now time.Time, cfg StepAside) bool {
	if now.Sub(c.last) > cfg.CircuitWindow {
		c.streak = 0
	}
	c.streak++
	c.last = now
	return c.streak >= cfg.CircuitFailures
}

func (c *circuit) success() { c.streak = 0 }

// stepAside turns the handler's retry or pause of m into a hold of its key
// when the lane may (StepAside on, a key, the circuit closed, first failure
// of this delivery here); otherwise it returns o as it is.
func (l *lane) stepAside(m *Msg, o Outcome) Outcome {
	sa := l.g.cfg.StepAside
	if !sa.Enabled {
		return o
	}
	switch {
	case o.Kind == KindDone || o.Kind == KindForward || o.Kind == KindPark:
		l.circ.success()
		return o
	case !o.StepAside || (o.Kind != KindRetry && o.Kind != KindPause):
		return o
	}
	open := l.circ.failure(time.Now(), sa)
	l.mu.Lock()
	l.stats.CircuitOpen = open
	l.mu.Unlock()
	if open || m.Failures != sa.InPlaceTries(m) || m.Type == "" || l.g.parked == nil {
		return o
	}
	h := o
	h.Kind = KindHold
	h.Reason = ReasonRetrying + ": " + errString(o.Err)
	return h
}
