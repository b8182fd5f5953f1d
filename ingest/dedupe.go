package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/envelope"
)

// dupChecker answers, for an event JetStream reported as a duplicate
// (PubAck.Duplicate: its id is in the stream's duplicate window), whether
// the stored event is the same one. The hot path pays nothing: only
// duplicates are looked up, one GetMsg each, concurrently (the stream
// handle is fetched once per request).
type dupChecker struct {
	s      *Service
	stream jetstream.Stream
}

// dupLookups bounds the concurrent lookups of one request.
const dupLookups = 16

// verdict is check's answer for one event.
type verdict struct {
	key, conflict string
	err           error
}

// checkAll checks every duplicate of a wave (acks[j] for items[wave[j]];
// nil acks and first stores are skipped), up to dupLookups at a time.
func (d *dupChecker) checkAll(ctx context.Context, items []item, wave []int, acks []*jetstream.PubAck) []verdict {
	out := make([]verdict, len(wave))
	var first *jetstream.PubAck
	for _, a := range acks {
		if a != nil && a.Duplicate {
			first = a
			break
		}
	}
	if first == nil {
		return out
	}
	if d.stream == nil {
		st, err := d.s.deps.JS.Stream(ctx, first.Stream)
		if err != nil {
			for j, a := range acks {
				if a != nil && a.Duplicate {
					out[j].err = fmt.Errorf("reading the stored event of a duplicate id: %w", err)
				}
			}
			return out
		}
		d.stream = st
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, dupLookups)
	for j, a := range acks {
		if a == nil || !a.Duplicate {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			v := &out[j]
			v.key, v.conflict, v.err = d.check(ctx, items[wave[j]].env, a)
		}()
	}
	wg.Wait()
	return out
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
