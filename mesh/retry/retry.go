// Package retry is the one retry policy of Sluice: how long a failing
// message waits before its next try (exponential backoff from Delay to Max
// with jitter), after how many failures in a row its lane is paused and for
// how long, and which HTTP statuses are worth another try. Every stage (its
// policy is registered with the stage, topology.StageSpec.Retry) and the
// lane runner use it; nothing else computes a backoff.
package retry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is a retry schedule. The zero value retries at once, forever,
// without pausing; stages fill it from their config (WithDefaults).
type Policy struct {
	// Tries is how many failures in a row pause the lane: every Tries-th
	// failure of the same message is a pause of Pause instead of a retry.
	// 0: never pause (the lane retries, holding, until the cause is gone).
	Tries int `yaml:"tries"`
	// Delay is the wait after the first failure; it doubles per further
	// failure up to Max.
	Delay time.Duration `yaml:"delay"`
	// Max caps the wait (jitter included). Max equal to Delay (or 0) is a
	// fixed delay.
	Max time.Duration `yaml:"max"`
	// Jitter adds up to this fraction of the wait at random (0 to 1), so
	// lanes do not hit a recovering dependency together.
	Jitter float64 `yaml:"jitter"`
	// Pause is how long the lane's consumer is paused on the server after
	// Tries failures in a row.
	Pause time.Duration `yaml:"pause"`
	// Statuses are HTTP statuses retried whatever a status policy says,
	// beside 408 and 429 (AlwaysRetried): 401 for a stage that refreshes
	// its credentials. Set by the stage, not configured.
	Statuses []int `yaml:"-"`
}

// WithDefaults returns p with its zero fields taken from def.
func (p Policy) WithDefaults(def Policy) Policy {
	if p.Tries == 0 {
		p.Tries = def.Tries
	}
	if p.Delay == 0 {
		p.Delay = def.Delay
	}
	if p.Max == 0 {
		p.Max = def.Max
	}
	if p.Jitter == 0 {
		p.Jitter = def.Jitter
	}
	if p.Pause == 0 {
		p.Pause = def.Pause
	}
	if p.Statuses == nil {
		p.Statuses = def.Statuses
	}
	return p
}

// Validate reports every invalid field, named under key (the config key of
// the policy, e.g. "dispatcher.retry").
func (p Policy) Validate(key string) error {
	var errs []error
	if p.Tries < 0 {
		errs = append(errs, fmt.Errorf("%s.tries: must be >= 0", key))
	}
	if p.Delay < 0 {
		errs = append(errs, fmt.Errorf("%s.delay: must be >= 0", key))
	}
	if p.Max != 0 && p.Max < p.Delay {
		errs = append(errs, fmt.Errorf("%s.max: %s must be >= delay (%s)", key, p.Max, p.Delay))
	}
	if p.Jitter < 0 || p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("%s.jitter: %g must be within 0..1", key, p.Jitter))
	}
	if p.Tries > 0 && p.Pause <= 0 {
		errs = append(errs, fmt.Errorf("%s.pause: must be > 0 when tries is set", key))
	}
	return errors.Join(errs...)
}

// Backoff is the wait before the next try of a message that failed
// failures times before (0 for the first failure): Delay doubled per
// earlier failure, capped at Max, plus up to Jitter of it at random, never
// above Max.
func (p Policy) Backoff(failures int) time.Duration {
	limit := max(p.Max, p.Delay)
	d := p.Delay
	for i := 0; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if p.Jitter > 0 && d > 0 {
		d += rand.N(time.Duration(float64(d)*p.Jitter) + 1)
	}
	return min(d, limit)
}

// Next says what a failure does to a message that failed failures times
// before: wait d and try again, or (pause true) pause the lane for d. A
// larger retryAfter (a server's Retry-After) wins either way.
func (p Policy) Next(failures int, retryAfter time.Duration) (d time.Duration, pause bool) {
	if p.Tries > 0 && (failures+1)%p.Tries == 0 {
		return max(p.Pause, retryAfter), true
	}
	return max(p.Backoff(failures), retryAfter), false
}

// AlwaysRetried reports the HTTP statuses that are retried whatever a
// status policy says: 408 Request Timeout and 429 Too Many Requests (the
// other side asks for another try later).
func AlwaysRetried(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

// Retried reports whether status is retried whatever a status policy
// says: 408, 429 and p.Statuses.
func (p Policy) Retried(status int) bool {
	return AlwaysRetried(status) || slices.Contains(p.Statuses, status)
}

// ErrRetried is the error for a status policy that names a status Retried
// reports ("401, 408 and 429 are always retried"); the caller removes it
// from the policy.
func (p Policy) ErrRetried() error {
	all := slices.Sorted(slices.Values(append([]int{http.StatusRequestTimeout, http.StatusTooManyRequests}, p.Statuses...)))
	all = slices.Compact(all)
	names := make([]string, len(all))
	for i, s := range all {
		names[i] = strconv.Itoa(s)
	}
	last := len(names) - 1
	return errors.New(strings.Join(names[:last], ", ") + " and " + names[last] + " are always retried")
}

// Retryable reports whether an HTTP answer with status is worth another
// try without a policy deciding: 5xx, 408 and 429. Other 4xx are the
// request's fault (a stage's status policy says whether they hold or park).
func Retryable(status int) bool {
	return status >= 500 || AlwaysRetried(status)
}
