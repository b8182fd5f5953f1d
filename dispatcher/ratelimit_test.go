package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiterSlowsDownOn429AndRecovers(t *testing.T) {
	l := newLimiter(RateLimitConfig{RPS: 64})
	require.Equal(t, 6, l.lim.Burst(), "default burst RPS/10")
	l.observe(429, 0)
	require.InDelta(t, 32, l.rate(), 0.01)
	for range 10 {
		l.observe(429, 0)
	}
	require.InDelta(t, 4, l.rate(), 0.01, "floor RPS/16")
	for range 100 {
		l.observe(200, 0)
	}
	require.InDelta(t, 64, l.rate(), 0.01, "back to the configured rate, not above")
	require.EqualValues(t, 11, l.throttled.Load())
}

func TestLimiterWaitsForRetryAfter(t *testing.T) {
	l := newLimiter(RateLimitConfig{RPS: 1000, Burst: 10})
	l.observe(429, 300*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.wait(ctx), context.DeadlineExceeded, "nothing goes before Retry-After")
	var none *limiter
	require.NoError(t, none.wait(context.Background()), "no limit configured")
	require.Nil(t, newLimiter(RateLimitConfig{}))
}
