package watchdog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// advisoryTypePrefix starts the type of every JetStream advisory.
const advisoryTypePrefix = "io.nats.jetstream.advisory."

// maxAdvisory bounds an advisory body.
const maxAdvisory = 64 << 10

// Advisory is the part of a JetStream advisory the watchdog reads. Kind is
// the type without its "io.nats.jetstream.advisory.v1." prefix: max_deliver,
// nak, terminated, consumer_action, stream_action, consumer_pause,
// stream_leader_elected, consumer_leader_elected, stream_quorum_lost,
// consumer_quorum_lost, server_out_of_space, ...
type Advisory struct {
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	Time       time.Time `json:"timestamp"`
	Stream     string    `json:"stream,omitempty"`
	Consumer   string    `json:"consumer,omitempty"`
	Action     string    `json:"action,omitempty"`
	StreamSeq  uint64    `json:"stream_seq,omitempty"`
	Deliveries uint64    `json:"deliveries,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Paused     bool      `json:"paused,omitempty"`
	PauseUntil time.Time `json:"pause_until,omitzero"`
	Server     string    `json:"server,omitempty"`
	Kind       string    `json:"-"`
}

// DecodeAdvisory decodes a JetStream advisory. Unknown fields are allowed
// (servers add them); a body over 64 KiB, invalid JSON or a type that is
// not a JetStream advisory is refused with an error wrapping ErrBadAdvisory.
func DecodeAdvisory(b []byte) (Advisory, error) {
	var a Advisory
	if len(b) > maxAdvisory {
		return a, fmt.Errorf("%w: body over %d bytes", ErrBadAdvisory, maxAdvisory)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return Advisory{}, fmt.Errorf("%w: %v", ErrBadAdvisory, err)
	}
	rest, ok := strings.CutPrefix(a.Type, advisoryTypePrefix)
	if !ok {
		return Advisory{}, fmt.Errorf("%w: type %.80q", ErrBadAdvisory, a.Type)
	}
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		rest = rest[i+1:]
	}
	if rest == "" {
		return Advisory{}, fmt.Errorf("%w: empty kind", ErrBadAdvisory)
	}
	a.Kind = rest
	return a, nil
}

// onAdvisory handles one advisory from the advisories stream or the
// out-of-storage subscription.
func (w *Watchdog) onAdvisory(data []byte) {
	a, err := DecodeAdvisory(data)
	if err != nil {
		w.count(&w.badAdvisories)
		w.log.Debug().Err(err).Msg("advisory skipped")
		return
	}
	w.mu.Lock()
	w.advisories[a.Kind]++
	w.mu.Unlock()
	switch a.Kind {
	case "max_deliver":
		w.alerts.event("max_deliveries/"+a.Consumer, "max_deliveries", fmt.Sprintf(
			"consumer %s on %s gave up on stream seq %d after %d deliveries: the message was skipped "+
				"(lanes use unlimited MaxDeliver; check the consumer config)", a.Consumer, a.Stream, a.StreamSeq, a.Deliveries))
	case "terminated":
		w.alerts.event("terminated/"+a.Consumer, "terminated", fmt.Sprintf(
			"consumer %s on %s terminated stream seq %d: %s", a.Consumer, a.Stream, a.StreamSeq, a.Reason))
	case "stream_quorum_lost", "consumer_quorum_lost":
		w.alerts.event("quorum_lost/"+a.Stream+"/"+a.Consumer, "quorum_lost", fmt.Sprintf(
			"%s lost quorum (stream %s %s): writes or deliveries stall until the cluster recovers", a.Kind, a.Stream, a.Consumer))
	case "server_out_of_space":
		w.alerts.event("out_of_storage/"+a.Server, "out_of_storage", fmt.Sprintf(
			"JetStream server %s is out of storage (stream %s): publishes are refused", a.Server, a.Stream))
	case "consumer_action", "stream_action":
		// Lane consumers and streams matter; the short-lived read-only
		// consumers of audit, trace, replay and status come and go.
		if a.Action == "delete" && (a.Consumer == "" || topology.IsLaneConsumer(a.Consumer)) {
			w.log.Warn().Str("stream", a.Stream).Str("consumer", a.Consumer).Msg("deleted (advisory)")
		}
	case "consumer_pause":
		w.log.Info().Str("stream", a.Stream).Str("consumer", a.Consumer).Bool("paused", a.Paused).
			Time("until", a.PauseUntil).Msg("consumer pause (advisory)")
	}
}

// onLaneAlert handles one alert the lanes published on <prefix>.alerts.<kind>.
func (w *Watchdog) onLaneAlert(m jetstream.Msg) {
	defer func() { _ = m.Ack() }()
	if m.Subject() == w.names.AlertSubject(watchdogAlertKind) {
		return // our own
	}
	var a lane.Alert
	if len(m.Data()) > maxAdvisory || json.Unmarshal(m.Data(), &a) != nil {
		w.count(&w.badAdvisories)
		return
	}
	switch a.Kind {
	case "lane_paused":
		w.mu.Lock()
		w.pauseReason[a.Consumer] = a.Reason
		w.mu.Unlock()
	case "parked":
		w.mu.Lock()
		w.lastParked = fmt.Sprintf("last: %s %s: %s", a.Stage, a.Subject, a.Reason)
		w.parkedNew++
		w.mu.Unlock()
	default:
		w.alerts.event("lane_alert/"+a.Kind+"/"+a.Consumer, "lane_alert", fmt.Sprintf("%s lane %s: %s %s",
			a.Stage, a.Consumer, a.Kind, a.Reason))
	}
}

// consumeDurable creates (or reuses) the watchdog's durable consumer on
// stream and consumes it. New durables start with new messages only; an
// existing one resumes where the last watchdog stopped, so nothing is
// missed across restarts.
func (w *Watchdog) consumeDurable(ctx context.Context, stream, filter string, h jetstream.MessageHandler) (jetstream.ConsumeContext, error) {
	c, err := w.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durableName,
		Description:   "Sluice watchdog",
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	})
	if err != nil {
		return nil, fmt.Errorf("watchdog consumer on %s: %w", stream, err)
	}
	return c.Consume(h, jetstream.PullExpiry(5*time.Second))
}

// outOfStorageSubject is the server-wide out-of-storage advisory, not tied
// to a stream, so it is subscribed to directly instead of being captured.
const outOfStorageSubject = topology.AdvisoryPrefix + ".SERVER.OUT_OF_STORAGE"

func (w *Watchdog) subscribeOutOfStorage() (*nats.Subscription, error) {
	return w.nc.Subscribe(outOfStorageSubject, func(m *nats.Msg) { w.onAdvisory(m.Data) })
}
