package watchdog

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

type recSink struct {
	mu sync.Mutex
	as []Alert
}

func (r *recSink) Name() string { return "rec" }
func (r *recSink) Send(_ context.Context, a Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.as = append(r.as, a)
	return nil
}

func (r *recSink) states() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.as {
		out = append(out, a.State+":"+a.Key)
	}
	return out
}

// The alerter dedupes per key, reminds at most every min_interval, waits
// recover_after before "recovered" and folds events.
func TestAlerterDedupeReminderRecoveryAndEvents(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rec := &recSink{}
	a := newAlerter(AlertsConfig{MinInterval: time.Minute, RecoverAfter: 10 * time.Second, Timeout: time.Second},
		clock, []Sink{rec}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { a.run(ctx); close(done) }()

	step := func(d time.Duration) { now = now.Add(d) }
	for i := 0; i < 5; i++ { // five polls: one alert
		a.raise("stall/x", "stall", "stalled")
		step(5 * time.Second)
	}
	step(time.Minute)
	a.raise("stall/x", "stall", "stalled") // reminder
	a.clear("stall/x", "")                 // absent once: not yet recovered
	step(5 * time.Second)
	a.raise("stall/x", "stall", "stalled") // flaps back: stays open, no message
	a.clear("stall/x", "")
	step(5 * time.Second)
	a.clear("stall/x", "")
	step(6 * time.Second)
	a.clear("stall/x", "ok again") // absent 11s: recovered
	a.clear("stall/x", "ok again") // already closed: nothing
	require.Empty(t, a.conditions())

	a.event("parked/d", "parked", "one")
	a.event("parked/d", "parked", "two") // folded
	a.event("parked/d", "parked", "three")
	step(2 * time.Minute)
	a.event("parked/d", "parked", "four")
	a.close()
	<-done

	require.Equal(t, []string{
		"open:stall/x", "still_open:stall/x", "recovered:stall/x", "event:parked/d", "event:parked/d",
	}, rec.states())
	require.Equal(t, 2, rec.as[4].Suppressed)
	require.True(t, strings.HasPrefix(rec.as[2].Text, "ok again (after"), rec.as[2].Text)
	require.Contains(t, SlackText(rec.as[4]), "(+2 similar)")
}

// Sink errors never carry the webhook URL (it is the secret).
func TestSinkErrorsDoNotLeakTheURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	defer srv.Close()
	secret := "/services/T1/B1/topsecret"
	for _, s := range []Sink{NewSlackSink(srv.URL+secret, nil), NewWebhookSink(srv.URL+secret, nil),
		NewSlackSink("http://127.0.0.1:1"+secret, nil)} {
		err := s.Send(context.Background(), Alert{Key: "k", State: StateOpen, Text: "t"})
		require.Error(t, err)
		require.NotContains(t, err.Error(), "topsecret")
	}
}
