package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/envelope"
)

// dupChecker answers, for an event JetStream reported as a duplicate
// (PubAck.Duplicate: its id is in the stream's duplicate window), whether
// the stored event is the same one. The hot path pays nothing: only
// duplicates are looked up, one GetMsg each (the stream handle is fetched
// once per request).
type dupChecker struct {
	s      *Service
	stream jetstream.Stream
}

// check returns the stored event's key and, when it is not the same
// event, why (conflict != ""). Same event: same type, key, source and data
// (JSON-equal, so whitespace and key order do not matter). occurred_at is
// not compared: `sluice import` and `sluice backfill` stamp the send time,
// and a re-run within the window re-sends the same rows (same ids, same
// data) that must stay duplicates. A stored message that is gone (stream limits) cannot be
// compared: it counts as the same event with an unknown key (""), so the
// reply never names a key that is not stored. err: the stream could not
// be read (the caller answers 503 and the producer retries).
func (d *dupChecker) check(ctx context.Context, sent *envelope.Envelope, ack *jetstream.PubAck) (key, conflict string, err error) {
	if d.stream == nil {
		if d.stream, err = d.s.deps.JS.Stream(ctx, ack.Stream); err != nil {
			return "", "", fmt.Errorf("reading the stored event of duplicate id %q: %w", sent.ID, err)
		}
	}
	m, err := d.stream.GetMsg(ctx, ack.Sequence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("reading the stored event of duplicate id %q: %w", sent.ID, err)
	}
	stored, err := envelope.Decode(m.Data)
	if err != nil {
		return "", "the id is already stored with a different body", nil
	}
	switch {
	case stored.Key != sent.Key:
		return stored.Key, "the id is already stored with another key", nil
	case stored.Source != sent.Source:
		return stored.Key, "the id is already stored by another producer (source)", nil
	case stored.Type != sent.Type || !sameJSON(stored.Data, sent.Data):
		return stored.Key, "the id is already stored with a different body", nil
	}
	return stored.Key, "", nil
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, oka := decodeJSON(a)
	vb, okb := decodeJSON(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	return v, dec.Decode(&v) == nil
}
