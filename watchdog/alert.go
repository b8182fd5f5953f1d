package watchdog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Alert states.
const (
	StateOpen      = "open"       // a condition was detected
	StateStillOpen = "still_open" // reminder: the condition lasts (at most every alerts.min_interval)
	StateRecovered = "recovered"  // the condition cleared
	StateEvent     = "event"      // a one-off unusual event (no recovery follows)
)

// Alert is one message to the sinks. The generic webhook receives it as JSON.
type Alert struct {
	// Key identifies the condition ("stall/dispatcher-003"); dedupe is per key.
	Key string `json:"key"`
	// Condition is the condition kind (stall, no_puller, paused, ...).
	Condition string `json:"condition"`
	// State is open, still_open, recovered or event.
	State string `json:"state"`
	// Text is the human-readable message.
	Text string `json:"text"`
	// Since is when the condition opened.
	Since time.Time `json:"since,omitzero"`
	// At is when the alert was made.
	At time.Time `json:"at"`
	// Suppressed counts earlier events of this key folded into this one by
	// the rate limit.
	Suppressed int `json:"suppressed,omitempty"`
}

// Sink delivers alerts somewhere.
type Sink interface {
	// Name names the sink in logs ("slack"); never the URL.
	Name() string
	// Send delivers one alert.
	Send(ctx context.Context, a Alert) error
}

// SlackSink posts alerts to a Slack incoming webhook as {"text": …}.
type SlackSink struct {
	url    string
	client *http.Client
}

// NewSlackSink returns a sink posting to webhookURL with client (nil: a
// client with a 10s timeout).
func NewSlackSink(webhookURL string, client *http.Client) *SlackSink {
	return &SlackSink{url: webhookURL, client: orDefaultClient(client)}
}

// Name implements Sink.
func (s *SlackSink) Name() string { return "slack" }

// Send implements Sink.
func (s *SlackSink) Send(ctx context.Context, a Alert) error {
	return postJSON(ctx, s.client, s.url, map[string]string{"text": SlackText(a)})
}

// SlackText formats an alert as one Slack message line.
func SlackText(a Alert) string {
	icon := ":rotating_light:"
	switch a.State {
	case StateRecovered:
		icon = ":white_check_mark:"
	case StateStillOpen:
		icon = ":hourglass:"
	case StateEvent:
		icon = ":warning:"
	}
	txt := fmt.Sprintf("%s *sluice %s* `%s`: %s", icon, a.Condition, a.Key, a.Text)
	if a.State == StateStillOpen && !a.Since.IsZero() {
		txt += fmt.Sprintf(" (still, since %s)", a.Since.UTC().Format(time.RFC3339))
	}
	if a.Suppressed > 0 {
		txt += fmt.Sprintf(" (+%d similar)", a.Suppressed)
	}
	return txt
}

// WebhookSink posts each Alert as JSON to a URL.
type WebhookSink struct {
	url    string
	client *http.Client
}

// NewWebhookSink returns a sink posting to u with client (nil: default).
func NewWebhookSink(u string, client *http.Client) *WebhookSink {
	return &WebhookSink{url: u, client: orDefaultClient(client)}
}

// Name implements Sink.
func (s *WebhookSink) Name() string { return "webhook" }

// Send implements Sink.
func (s *WebhookSink) Send(ctx context.Context, a Alert) error {
	return postJSON(ctx, s.client, s.url, a)
}

// LogSink writes alerts to a logger (always on).
type LogSink struct{ Log zerolog.Logger }

// Name implements Sink.
func (s LogSink) Name() string { return "log" }

// Send implements Sink.
func (s LogSink) Send(_ context.Context, a Alert) error {
	ev := s.Log.Warn()
	if a.State == StateRecovered {
		ev = s.Log.Info()
	}
	ev.Str("alert", a.Key).Str("condition", a.Condition).Str("state", a.State).Msg(a.Text)
	return nil
}

// StreamSink publishes alerts as JSON to <prefix>.alerts.watchdog so that the
// alerts stream keeps them for the status page and the CLI.
type StreamSink struct {
	JS      jetstream.JetStream
	Subject string
}

// Name implements Sink.
func (s StreamSink) Name() string { return "stream" }

// Send implements Sink.
func (s StreamSink) Send(ctx context.Context, a Alert) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	m := nats.NewMsg(s.Subject)
	m.Data = b
	_, err = s.JS.PublishMsg(ctx, m)
	return err
}

func orDefaultClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{Timeout: DefaultAlertTimeout}
}

// postJSON posts v and checks for a 2xx. Its errors never contain the URL.
func postJSON(ctx context.Context, c *http.Client, u string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return errors.New("cannot build request")
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("post: %w", ue.Err)
		}
		return errors.New("post failed")
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// Condition is an open condition as the status endpoint shows it.
type Condition struct {
	Key       string    `json:"key"`
	Condition string    `json:"condition"`
	Text      string    `json:"text"`
	Since     time.Time `json:"since"`
}

type openCond struct {
	Condition
	lastSent    time.Time
	absentSince time.Time // zero while the condition is seen
}

type eventState struct {
	lastSent   time.Time
	suppressed int
}

// alerter dedupes and rate-limits alerts per key and sends them to the
// sinks from one goroutine, so a slow webhook never delays a poll.
type alerter struct {
	minInterval  time.Duration
	recoverAfter time.Duration
	timeout      time.Duration
	now          func() time.Time
	sinks        []Sink
	log          zerolog.Logger

	mu     sync.Mutex
	open   map[string]*openCond
	events map[string]*eventState
	q      chan Alert
	closed bool

	raised, sent, failed, dropped atomic.Uint64
}

func newAlerter(cfg AlertsConfig, now func() time.Time, sinks []Sink, log zerolog.Logger) *alerter {
	return &alerter{
		minInterval: cfg.MinInterval, recoverAfter: cfg.RecoverAfter, timeout: cfg.Timeout, now: now,
		sinks: sinks, log: log,
		open: map[string]*openCond{}, events: map[string]*eventState{}, q: make(chan Alert, 256),
	}
}

// raise opens condition key or updates its text. It sends "open" the first
// time and a "still_open" reminder at most every minInterval.
func (a *alerter) raise(key, cond, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	c, ok := a.open[key]
	if !ok {
		c = &openCond{Condition: Condition{Key: key, Condition: cond, Text: text, Since: now}, lastSent: now}
		a.open[key] = c
		a.enqueue(Alert{Key: key, Condition: cond, State: StateOpen, Text: text, Since: now, At: now})
		return
	}
	c.Text, c.absentSince = text, time.Time{}
	if now.Sub(c.lastSent) >= a.minInterval {
		c.lastSent = now
		a.enqueue(Alert{Key: key, Condition: cond, State: StateStillOpen, Text: text, Since: c.Since, At: now})
	}
}

// clear notes that condition key is absent; once it has been absent for
// recoverAfter it is closed with a "recovered" message. text, if not empty,
// replaces the default message.
func (a *alerter) clear(key, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.open[key]
	if !ok {
		return
	}
	now := a.now()
	if c.absentSince.IsZero() {
		c.absentSince = now
	}
	if now.Sub(c.absentSince) < a.recoverAfter {
		return
	}
	delete(a.open, key)
	if text == "" {
		text = "recovered: " + c.Text
	}
	text += fmt.Sprintf(" (after %s)", now.Sub(c.Since).Round(time.Second))
	a.enqueue(Alert{Key: key, Condition: c.Condition.Condition, State: StateRecovered, Text: text, Since: c.Since, At: now})
}

// event sends a one-off alert, folding events of one key that come less
// than minInterval apart into the next one sent.
func (a *alerter) event(key, cond, text string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	e, ok := a.events[key]
	if ok && now.Sub(e.lastSent) < a.minInterval {
		e.suppressed++
		return
	}
	if !ok {
		e = &eventState{}
		a.events[key] = e
	}
	a.enqueue(Alert{Key: key, Condition: cond, State: StateEvent, Text: text, At: now, Suppressed: e.suppressed})
	e.lastSent, e.suppressed = now, 0
}

func (a *alerter) enqueue(al Alert) {
	a.raised.Add(1)
	if a.closed {
		a.dropped.Add(1)
		return
	}
	select {
	case a.q <- al:
	default:
		a.dropped.Add(1)
		a.log.Warn().Str("alert", al.Key).Msg("alert queue full; alert dropped")
	}
}

// conditions lists the open conditions, oldest first.
func (a *alerter) conditions() []Condition {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Condition, 0, len(a.open))
	for _, c := range a.open {
		out = append(out, c.Condition)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// run sends queued alerts until close is called and the queue is empty,
// or ctx ends.
func (a *alerter) run(ctx context.Context) {
	for {
		select {
		case al, ok := <-a.q:
			if !ok {
				return
			}
			a.send(ctx, al)
		case <-ctx.Done():
			return
		}
	}
}

func (a *alerter) send(ctx context.Context, al Alert) {
	for _, s := range a.sinks {
		sctx, cancel := context.WithTimeout(ctx, a.timeout)
		err := s.Send(sctx, al)
		cancel()
		if err != nil {
			a.failed.Add(1)
			a.log.Warn().Err(err).Str("sink", s.Name()).Str("alert", al.Key).Msg("alert not delivered")
			continue
		}
		a.sent.Add(1)
	}
}

func (a *alerter) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

func (a *alerter) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		close(a.q)
	}
}
