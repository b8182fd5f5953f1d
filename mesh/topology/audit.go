package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Operator actions (the CLI's and the status page's) are recorded in the
// audit stream on AuditSubject(<action>) before they are carried out.
const (
	AuditPause   = "pause"
	AuditResume  = "resume"
	AuditReplay  = "replay"
	AuditDiscard = "discard"
)

// AuditRecord is what an operator action publishes on
// <prefix>.audit.<action> (the audit stream stores it) before it acts.
type AuditRecord struct {
	Action   string     `json:"action"`
	Stage    Stage      `json:"stage,omitempty"`
	Key      string     `json:"key,omitempty"`
	Consumer string     `json:"consumer,omitempty"`
	Until    *time.Time `json:"until,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	By       string     `json:"by"`
	At       time.Time  `json:"at"`
	Source   string     `json:"source"`
	Remote   string     `json:"remote,omitempty"`
}

// StreamSource is the part of jetstream.JetStream that opens a stream.
type StreamSource interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// auditReadBatch is how many audit records one fetch asks for.
const auditReadBatch = 256

// OperatorPause returns the end of the pause an operator put on lane
// consumer (`sluice pause`, the status page) when it is still running at
// now: the consumer's latest pause or resume record in the audit stream,
// if that is a pause until after now. Nil when there is none (or no audit
// stream). A recreated consumer takes it over: a NATS restart loses an
// in-memory consumer with its pause (LaneConsumerConfig), and an operator
// who paused an outlet to fix something must not find it running after
// the restart.
func (n Names) OperatorPause(ctx context.Context, js StreamSource, consumer string, now time.Time) (*time.Time, error) {
	s, err := js.Stream(ctx, n.AuditStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	// Most recreations find no pause ever recorded: one lookup, no read.
	if _, err := s.GetLastMsgForSubject(ctx, n.AuditSubject(AuditPause)); errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{n.AuditSubject(AuditPause), n.AuditSubject(AuditResume)},
	})
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	var last *AuditRecord
	for left := info.NumPending; left > 0; {
		batch, err := c.Fetch(int(min(left, auditReadBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("audit stream: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var r AuditRecord
			if json.Unmarshal(m.Data(), &r) == nil && r.Consumer == consumer &&
				(r.Action == AuditPause || r.Action == AuditResume) {
				last = &r
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("audit stream: %w", err)
		}
		if got == 0 {
			return nil, fmt.Errorf("audit stream: %d records announced, none delivered", left)
		}
		left -= uint64(min(uint64(got), left))
	}
	if last == nil || last.Action != AuditPause || last.Until == nil || !last.Until.After(now) {
		return nil, nil
	}
	return last.Until, nil
}

// WithOperatorPause returns cfg, a lane consumer's config about to be
// (re)created, paused until the end of an operator's pause of it that is
// still running (OperatorPause).
func (n Names) WithOperatorPause(ctx context.Context, js StreamSource, cfg jetstream.ConsumerConfig) (jetstream.ConsumerConfig, error) {
	until, err := n.OperatorPause(ctx, js, cfg.Durable, time.Now())
	if err != nil {
		return jetstream.ConsumerConfig{}, fmt.Errorf("operator pause of %s: %w", cfg.Durable, err)
	}
	cfg.PauseUntil = until
	return cfg, nil
}
