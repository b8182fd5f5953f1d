package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/topology"
)

// Oldest is the oldest undelivered event, found cheaply (a few requests
// per partition, no reading of whole streams) for the status page.
type Oldest struct {
	// InFlight is the oldest accepted event neither delivered nor parked
	// yet: at the head of an enricher lane's backlog, or the oldest CRM
	// request in the dispatch stream. Nil when nothing waits.
	InFlight *EventRef `json:"in_flight,omitempty"`
	// Parked is the oldest message of the parked stream (outbound stages);
	// its AcceptedAt is when it was parked, Why the stage and reason.
	Parked *EventRef `json:"parked,omitempty"`
}

// FindOldest looks at the head of each enricher lane's backlog, the head
// of each partition of the dispatch stream and the head of the parked
// stream.
func FindOldest(ctx context.Context, js jetstream.JetStream, names topology.Names, now time.Time) (Oldest, error) {
	var o Oldest
	consider := func(r EventRef) {
		if o.InFlight == nil || r.AcceptedAt.Before(o.InFlight.AcceptedAt) {
			r.Age = now.Sub(r.AcceptedAt)
			o.InFlight = &r
		}
	}
	events, err := js.Stream(ctx, names.EventsStream())
	if err != nil {
		return o, err
	}
	dispatch, err := js.Stream(ctx, names.DispatchStream())
	if err != nil {
		return o, err
	}
	for p := 0; p < names.Partitions(); p++ {
		c, err := js.Consumer(ctx, names.EventsStream(), names.ConsumerName(topology.StageEnricher, p))
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			return o, err
		default:
			m, err := events.GetMsg(ctx, c.CachedInfo().AckFloor.Stream+1, jetstream.WithGetMsgSubject(names.EventsPartitionFilter(p)))
			if err == nil {
				r := EventRef{ID: EventID(m.Data, m.Header, names.EventsStream(), m.Sequence), Seq: m.Sequence,
					AcceptedAt: m.Time, State: StateInFlight}
				_, r.Type, r.Key, _ = names.SubjectParts(m.Subject)
				r.Key, _ = topology.KeyFromToken(r.Key)
				consider(r)
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return o, err
			}
		}
		m, err := dispatch.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(names.DispatchPartitionFilter(p)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return o, err
		}
		var req struct {
			EventID    string    `json:"event_id"`
			Type       string    `json:"type"`
			Key        string    `json:"key"`
			AcceptedAt time.Time `json:"accepted_at"`
		}
		if json.Unmarshal(m.Data, &req) == nil {
			if req.AcceptedAt.IsZero() {
				req.AcceptedAt = m.Time
			}
			consider(EventRef{ID: req.EventID, Type: req.Type, Key: req.Key, AcceptedAt: req.AcceptedAt, State: StateInFlight})
		}
	}
	parked, err := js.Stream(ctx, names.ParkedStream())
	if err != nil {
		return o, err
	}
	for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
		m, err := parked.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(names.Config().Prefix+".parked."+string(stage)+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return o, err
		}
		p := parkedMsg(m.Subject, m.Data, m.Header, names.ParkedStream(), m.Sequence, m.Time)
		key, _ := topology.KeyFromToken(p.KeyToken)
		r := EventRef{ID: p.ID, Type: p.Type, Key: key, Seq: p.Seq, AcceptedAt: p.At, State: StateParked, Age: now.Sub(p.At),
			Why: string(p.Stage) + ": " + p.Reason}
		if o.Parked == nil || r.AcceptedAt.Before(o.Parked.AcceptedAt) {
			o.Parked = &r
		}
	}
	return o, nil
}
