package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/retry"
)

// Config tunes a Client. The zero value works: WithDefaults fills it in.
type Config struct {
	// Source is set on events that have none (free text: the producer's name).
	Source string `yaml:"source"`
	// DeriveKey lets events without a key through the local check: the
	// server derives the key from data by the type's key expression. HTTP
	// transport only. Keyless events are published one at a time per client
	// (their key is not known before the server replies).
	DeriveKey bool `yaml:"derive_key"`
	// AttemptTimeout bounds one attempt (one request, one JetStream ack).
	AttemptTimeout time.Duration `yaml:"attempt_timeout"`
	// MinBackoff is the first wait before a retry; it doubles per attempt,
	// with full jitter, up to MaxBackoff.
	MinBackoff time.Duration `yaml:"min_backoff"`
	// MaxBackoff caps the wait between attempts, including the server's
	// Retry-After hint.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// MaxAttempts gives up after this many attempts; 0 retries until the
	// context ends.
	MaxAttempts int `yaml:"max_attempts"`
	// Logger receives retries at debug level (never event data). The zero
	// value logs nothing.
	Logger zerolog.Logger `yaml:"-"`
}

// Defaults.
const (
	DefaultAttemptTimeout = 10 * time.Second
	DefaultMinBackoff     = 50 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
)

// WithDefaults fills in zero fields.
func (c Config) WithDefaults() Config {
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	return c
}

// Validate reports the first bad field, named by its config key.
func (c Config) Validate() error {
	switch {
	case c.AttemptTimeout <= 0:
		return errors.New("client.attempt_timeout: must be > 0")
	case c.MinBackoff <= 0:
		return errors.New("client.min_backoff: must be > 0")
	case c.MaxBackoff < c.MinBackoff:
		return errors.New("client.max_backoff: must be >= client.min_backoff")
	case c.MaxAttempts < 0:
		return errors.New("client.max_attempts: must be >= 0 (0: until the context ends)")
	}
	return nil
}

// Transport sends checked events to Sluice and waits until they are stored.
// Send gets one or more events (a batch keeps its order per key) and
// returns one Result per event, in order. Errors wrapping ErrInvalid or
// ErrRejected are final; every other error is retried with the same events.
type Transport interface {
	Send(ctx context.Context, events []*envelope.Envelope) ([]Result, error)
}

// keyDeriver is implemented by transports whose server derives missing
// keys from data (DerivesKeys returns true); Config.DeriveKey needs one.
type keyDeriver interface{ DerivesKeys() bool }

// Result says how one event was stored.
type Result struct {
	ID string `json:"id"`
	// Key is the ordering key (derived by the server when the event had none).
	Key string `json:"key"`
	// StreamSeq is the event's sequence in the events stream.
	StreamSeq uint64 `json:"stream_seq"`
	// Duplicate: the stream already had this id (an earlier attempt, or an
	// earlier publish of the same event, was stored).
	Duplicate bool `json:"duplicate"`
	// Attempts is how many sends it took (1 without retries).
	Attempts int `json:"-"`
}

// Client publishes events, safe for concurrent use. Events of one key are
// sent one at a time, in the order Publish was called; different keys go
// in parallel.
type Client struct {
	cfg   Config
	tr    Transport
	locks *keyLocks
	now   func() time.Time
}

// deriveLock is the lock of keyless events: no key has control characters.
const deriveLock = "\x00derive"

// New returns a client sending through tr (NewJetStream or NewHTTP).
func New(cfg Config, tr Transport) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tr == nil {
		return nil, errors.New("client: nil transport")
	}
	if kd, ok := tr.(keyDeriver); cfg.DeriveKey && (!ok || !kd.DerivesKeys()) {
		return nil, fmt.Errorf("client.derive_key: %T cannot derive keys; set each event's key", tr)
	}
	return &Client{cfg: cfg, tr: tr, locks: newKeyLocks(), now: time.Now}, nil
}

// Publish completes ev (ID from NewID when empty, OccurredAt now when zero,
// Source from the config when empty; ev is updated in place, so the caller
// sees the id), checks it, waits for the previous event of its key to be
// acked, then sends it, retrying transient failures with the same id until
// it is stored, ctx ends or MaxAttempts is reached.
func (c *Client) Publish(ctx context.Context, ev *envelope.Envelope) (Result, error) {
	rs, err := c.PublishBatch(ctx, []*envelope.Envelope{ev})
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// PublishBatch publishes events in one request (HTTP: one NDJSON body;
// JetStream: waves of async publishes, one event per key in flight). The
// batch is all or nothing for the local and server checks; order is kept per
// key. It waits for every key of the batch, so prefer small batches.
func (c *Client) PublishBatch(ctx context.Context, events []*envelope.Envelope) ([]Result, error) {
	if len(events) == 0 {
		return nil, nil
	}
	if err := c.prepare(events); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(events))
	for _, ev := range events {
		k := ev.Key
		if k == "" {
			k = deriveLock
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if err := c.locks.lockAll(ctx, keys); err != nil {
		return nil, fmt.Errorf("client: waiting for the previous event of the key: %w", err)
	}
	defer c.locks.unlockAll(keys)
	return c.send(ctx, events)
}

// prepare fills in ids, times and sources and checks every event.
func (c *Client) prepare(events []*envelope.Envelope) error {
	var inv InvalidError
	seen := make(map[string]int, len(events))
	for i, ev := range events {
		if ev == nil {
			inv.Fields = append(inv.Fields, FieldError{Index: i, FieldError: envelope.FieldError{Reason: "nil event"}})
			continue
		}
		if ev.ID == "" {
			ev.ID = NewID()
		}
		if ev.OccurredAt.IsZero() {
			ev.OccurredAt = c.now().UTC()
		}
		if ev.Source == "" {
			ev.Source = c.cfg.Source
		}
		if err := ev.Check(); err != nil {
			var e *envelope.Invalid
			if !errors.As(err, &e) {
				return err
			}
			for _, f := range e.Fields {
				if f.Field == "key" && ev.Key == "" && c.cfg.DeriveKey {
					continue
				}
				inv.Fields = append(inv.Fields, FieldError{Index: i, ID: ev.ID, FieldError: f})
			}
		}
		if j, dup := seen[ev.ID]; dup {
			inv.Fields = append(inv.Fields, FieldError{Index: i, ID: ev.ID, FieldError: envelope.FieldError{
				Field: "id", Reason: fmt.Sprintf("used twice in one batch (events %d and %d)", j, i)}})
		}
		seen[ev.ID] = i
		if d := bytes.TrimSpace(ev.Data); len(d) > 0 && d[0] == '{' && !json.Valid(d) {
			inv.Fields = append(inv.Fields, FieldError{Index: i, ID: ev.ID, FieldError: envelope.FieldError{
				Field: "data", Reason: "not valid JSON"}})
		}
	}
	if len(inv.Fields) > 0 {
		return &inv
	}
	return nil
}

// send tries until the events are stored, a final error, or the budget ends.
func (c *Client) send(ctx context.Context, events []*envelope.Envelope) ([]Result, error) {
	var last error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		rs, err := c.tr.Send(actx, events)
		cancel()
		if err == nil {
			for i := range rs {
				rs[i].Attempts = attempt
			}
			return rs, nil
		}
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrRejected) {
			return nil, err
		}
		if last == nil || ctx.Err() == nil {
			last = err // keep the server's error over the context's own
		}
		if ctx.Err() != nil {
			return nil, &UnavailableError{Attempts: attempt, Last: last, Ctx: ctx.Err()}
		}
		if c.cfg.MaxAttempts > 0 && attempt >= c.cfg.MaxAttempts {
			return nil, &UnavailableError{Attempts: attempt, Last: last}
		}
		wait := c.backoff(attempt, err)
		c.cfg.Logger.Debug().Err(err).Int("attempt", attempt).Str("id", events[0].ID).
			Int("events", len(events)).Dur("wait", wait).Msg("publish failed, retrying with the same ids")
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, &UnavailableError{Attempts: attempt, Last: last, Ctx: ctx.Err()}
		}
	}
}

// backoff is MinBackoff·2^(attempt-1) capped at MaxBackoff, with jitter in
// its upper half (the one retry.Policy: from MinBackoff/2 doubling, plus up
// to as much again); a server's Retry-After (capped too) is a floor.
func (c *Client) backoff(attempt int, err error) time.Duration {
	d := retry.Policy{Delay: c.cfg.MinBackoff / 2, Max: c.cfg.MaxBackoff, Jitter: 1}.Backoff(attempt - 1)
	var ra *retryAfterError
	if errors.As(err, &ra) && ra.after > d {
		d = min(ra.after, c.cfg.MaxBackoff)
	}
	return d
}
