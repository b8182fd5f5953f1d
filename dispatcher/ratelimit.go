package dispatcher

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// RateLimitConfig is the client-side request rate towards the CRM, per
// process: each dispatcher replica has its own budget, so with N replicas
// the CRM sees up to N × RPS. Set RPS to the CRM's quota divided by the
// replicas (docs/crm-guide.md, "Quotas").
type RateLimitConfig struct {
	// RPS is the steady rate in requests per second (every CRM request:
	// creates, updates, lookups; not token fetches). 0: no limit.
	RPS float64 `yaml:"rps"`
	// Burst is how many requests may go at once after a quiet spell.
	// Default max(1, RPS/10 rounded).
	Burst int `yaml:"burst"`
}

// limiter spaces the requests (golang.org/x/time/rate) and slows down on
// the CRM's 429: the rate is halved (down to RPS/16) and nothing is sent
// before the answer's Retry-After; each 2xx gives back RPS/32 up to the
// configured rate.
type limiter struct {
	lim        *rate.Limiter
	configured rate.Limit

	mu        sync.Mutex
	until     time.Time
	throttled atomic.Uint64 // 429s seen
}

func newLimiter(c RateLimitConfig) *limiter {
	if c.RPS <= 0 {
		return nil
	}
	b := c.Burst
	if b == 0 {
		b = max(1, int(c.RPS/10+0.5))
	}
	return &limiter{lim: rate.NewLimiter(rate.Limit(c.RPS), b), configured: rate.Limit(c.RPS)}
}

// wait blocks until a request may go (ctx ends it).
func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	d := time.Until(l.until)
	l.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	return l.lim.Wait(ctx)
}

// observe feeds an answer back: 429 slows down, 2xx recovers.
func (l *limiter) observe(status int, retryAfter time.Duration) {
	if l == nil {
		return
	}
	now := time.Now()
	cur := l.lim.Limit()
	switch {
	case status == 429:
		l.throttled.Add(1)
		l.lim.SetLimitAt(now, max(cur/2, l.configured/16))
		if retryAfter > 0 {
			l.mu.Lock()
			if u := now.Add(retryAfter); u.After(l.until) {
				l.until = u
			}
			l.mu.Unlock()
		}
	case status/100 == 2 && cur < l.configured:
		l.lim.SetLimitAt(now, min(l.configured, cur+l.configured/32))
	}
}

// rate is the current rate (for Stats).
func (l *limiter) rate() float64 {
	if l == nil {
		return 0
	}
	return float64(l.lim.Limit())
}
