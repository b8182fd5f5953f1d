package client

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// JetStream publishes straight into the events stream: each event to
// names.EventSubject(type, key) with Nats-Msg-Id = its id, and waits for
// the stream's ack. The server does not check the type's schema on this
// path (ingest's HTTP and micro endpoints do); every event needs a key.
//
// Connect with nats.MaxReconnects(-1) so the connection outlives server
// restarts, and create js with jetstream.WithPublishAsyncTimeout when
// batches are published (futures of lost acks then leave its table). On a
// secured cluster the connection's options carry the credentials and TLS,
// and nats.CustomInboxPrefix("_INBOX_producer"): the producer user may
// receive the stream's acks only there (deploy/nats/permissions.conf).
type JetStream struct {
	js    jetstream.JetStream
	names topology.Names
}

// NewJetStream returns the JetStream transport.
func NewJetStream(js jetstream.JetStream, names topology.Names) *JetStream {
	return &JetStream{js: js, names: names}
}

func (t *JetStream) msg(ev *envelope.Envelope) (*nats.Msg, error) {
	b, err := ev.Marshal()
	if err != nil {
		return nil, &InvalidError{Fields: []FieldError{{ID: ev.ID,
			FieldError: envelope.FieldError{Field: "data", Reason: err.Error()}}}}
	}
	m := nats.NewMsg(t.names.EventSubject(ev.Type, ev.Key))
	m.Data = b
	return m, nil
}

// Send publishes events. One event: a synchronous publish. A batch: waves,
// wave i holding the i-th event of each key, each wave's acks awaited
// before the next, so two events of a key are never in flight together.
func (t *JetStream) Send(ctx context.Context, events []*envelope.Envelope) ([]Result, error) {
	rs := make([]Result, len(events))
	if len(events) == 1 {
		m, err := t.msg(events[0])
		if err != nil {
			return nil, err
		}
		ack, err := t.js.PublishMsg(ctx, m, jetstream.WithMsgID(events[0].ID))
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", events[0].ID, err)
		}
		rs[0] = result(events[0], ack)
		return rs, nil
	}
	for _, wave := range waves(events) {
		futs := make([]jetstream.PubAckFuture, len(wave))
		for j, i := range wave {
			m, err := t.msg(events[i])
			if err != nil {
				return nil, err
			}
			if futs[j], err = t.js.PublishMsgAsync(m, jetstream.WithMsgID(events[i].ID)); err != nil {
				return nil, fmt.Errorf("publish %s: %w", events[i].ID, err)
			}
		}
		for j, i := range wave {
			select {
			case ack := <-futs[j].Ok():
				rs[i] = result(events[i], ack)
			case err := <-futs[j].Err():
				return nil, fmt.Errorf("publish %s: %w", events[i].ID, err)
			case <-ctx.Done():
				return nil, fmt.Errorf("publish %s: waiting for the ack: %w", events[i].ID, ctx.Err())
			}
		}
	}
	return rs, nil
}

func result(ev *envelope.Envelope, ack *jetstream.PubAck) Result {
	return Result{ID: ev.ID, Key: ev.Key, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}
}

// waves groups event indexes: wave i holds the i-th event of each key.
func waves(events []*envelope.Envelope) [][]int {
	n := map[string]int{}
	var ws [][]int
	for i, ev := range events {
		w := n[ev.Key]
		n[ev.Key] = w + 1
		if w == len(ws) {
			ws = append(ws, nil)
		}
		ws[w] = append(ws[w], i)
	}
	return ws
}
