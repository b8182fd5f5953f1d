package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/leaderkv"
	"sluice.dev/mesh/topology"
)

// readBatch is how many messages one pull of a reader asks for.
const readBatch = 1000

// Progress is told how far a read is: done of total messages of what
// (total is an estimate; 0 when not known yet).
type Progress func(what string, done, total uint64)

// Filter narrows what is read to one key and/or one type.
type Filter struct {
	Key  string
	Type string
}

// A fresh ordered consumer on a cluster may answer "no responders" or an
// empty batch for a moment; reads retry that many times, that long apart.
const (
	notReadyRetries = 20
	notReadyPause   = 250 * time.Millisecond
)

func (f Filter) token() string {
	if f.Key == "" {
		return ""
	}
	return topology.KeyToken(f.Key)
}

// Source reads the streams a reconciliation looks at.
type Source struct {
	JS       jetstream.JetStream
	Names    topology.Names
	Progress Progress // optional
}

type readOpts struct {
	what        string
	stream      string
	filters     []string
	since       time.Time // zero: from the start
	startSeq    uint64    // > 0: from this sequence (wins over since)
	until       time.Time // zero: up to the end
	headersOnly bool
}

// read runs fn over the stream's messages matching o, in stream order, up
// to the last message stored when it began. fn returns false to stop.
func (s *Source) read(ctx context.Context, o readOpts, fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) (last uint64, err error) {
	st, err := s.JS.Stream(ctx, o.stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", o.stream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 || (o.startSeq > state.LastSeq) {
		return state.LastSeq, nil
	}
	end := state.LastSeq
	// Where the read ends: the last matching message, asked of the stream
	// leader. An ordered consumer may run on a replica that has not applied
	// the newest messages yet and report nothing pending before it; its
	// NumPending alone once ended a read 8 events short on a cluster.
	stopAt, lastAt, known := lastMatching(ctx, st, o.filters, end)
	if known && (stopAt == 0 || stopAt < o.startSeq || (!o.since.IsZero() && lastAt.Before(o.since))) {
		return end, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.filters, HeadersOnly: o.headersOnly,
		InactiveThreshold: 30 * time.Second}
	switch {
	case o.startSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.startSeq
	case !o.since.IsZero():
		since := o.since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", o.stream, err)
	}
	var done, total uint64
	retries := 0
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		var b jetstream.MessageBatch
		if first {
			b, err = c.FetchNoWait(readBatch)
		} else {
			b, err = c.Fetch(readBatch, jetstream.FetchMaxWait(2*time.Second))
		}
		if errors.Is(err, nats.ErrNoResponders) && retries < notReadyRetries {
			// On a cluster a fresh ordered consumer may not answer yet.
			retries++
			time.Sleep(notReadyPause)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", o.stream, err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			retries = 0
			md, err := m.Metadata()
			if err != nil {
				return 0, err
			}
			seq := md.Sequence.Stream
			if seq > end || (!o.until.IsZero() && md.Timestamp.After(o.until)) {
				return end, nil
			}
			if total == 0 {
				total = md.NumPending + 1
			}
			done++
			if s.Progress != nil && (done%readBatch == 0 || md.NumPending == 0) {
				s.Progress(o.what, done, total)
			}
			more, err := fn(m, md)
			if err != nil {
				return 0, err
			}
			if !more || seq >= end || (known && seq >= stopAt) || (!known && md.NumPending == 0) {
				return end, nil
			}
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			if errors.Is(err, nats.ErrNoResponders) && retries < notReadyRetries {
				retries++
				time.Sleep(notReadyPause)
				continue
			}
			return 0, fmt.Errorf("read %s: %w", o.stream, err)
		}
		if n == 0 {
			// Empty is the end only if the consumer agrees: a fresh ordered
			// consumer on a cluster can answer empty before it is ready, and
			// stopping there would make the audit call delivered events lost.
			if retries < notReadyRetries {
				// The last matching message may have been deleted since
				// (a replayed parked one): wait for it a few times only.
				if ci, err := c.Info(ctx); err != nil || ci.NumPending > 0 || (known && retries < 4) {
					retries++
					time.Sleep(notReadyPause)
					continue
				}
			}
			return end, nil
		}
	}
}

// lastMatching returns the sequence and time of the last message matching
// filters (0: none) and whether they are known: only when the leader answered for
// every filter with a sequence not after end.
func lastMatching(ctx context.Context, st jetstream.Stream, filters []string, end uint64) (uint64, time.Time, bool) {
	var last uint64
	var at time.Time
	for _, f := range filters {
		m, err := st.GetLastMsgForSubject(ctx, f)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil, m.Sequence > end:
			return 0, time.Time{}, false
		}
		if m.Sequence > last {
			last, at = m.Sequence, m.Time
		}
	}
	return last, at, len(filters) > 0
}

// Events reads the events stream's messages stored in [since, until]
// (zero: open) matching f, in stream order.
func (s *Source) Events(ctx context.Context, f Filter, since, until time.Time) ([]Event, error) {
	var out []Event
	stream := s.Names.EventsStream()
	_, err := s.read(ctx, readOpts{what: "events", stream: stream, filters: []string{s.Names.EventsFilter(f.Type, f.token())},
		since: since, until: until}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		p, typ, tok, err := s.Names.SubjectParts(m.Subject())
		if err != nil {
			return true, nil // not a stored event subject; the enricher parks it
		}
		out = append(out, Event{ID: EventID(m.Data(), m.Headers(), stream, md.Sequence.Stream), Type: typ, KeyToken: tok,
			Partition: p, Seq: md.Sequence.Stream, At: md.Timestamp, Replay: m.Headers().Get(lane.HeaderReplay)})
		return true, nil
	})
	return out, err
}

// Records reads the ledger records matching f stored from since on (or
// from sequence fromSeq when it is not 0) and returns the last sequence
// of the stream when the read began. A record stored twice (a retried
// publish) is returned once, at its first place.
func (s *Source) Records(ctx context.Context, f Filter, since time.Time, fromSeq uint64) ([]Stored, uint64, error) {
	var out []Stored
	seen := map[string]bool{}
	last, err := s.read(ctx, readOpts{what: "ledger", stream: s.Names.LedgerStream(),
		filters: []string{s.Names.LedgerFilter("", f.Type, f.token())}, since: since, startSeq: fromSeq},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			r, ok := s.record(m.Subject(), m.Data())
			if !ok || seen[r.ID()] {
				return true, nil
			}
			seen[r.ID()] = true
			out = append(out, Stored{Record: r, LedgerSeq: md.Sequence.Stream, StoredAt: md.Timestamp})
			return true, nil
		})
	return out, last, err
}

// record decodes a ledger message: the body, and type and key from the
// subject <prefix>.ledger.<step>.<type>.<key token>.
func (s *Source) record(subject string, data []byte) (Record, bool) {
	var r Record
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || json.Unmarshal(data, &r) != nil || r.EventID == "" {
		return r, false // not a record of ours; skipped
	}
	r.Type, r.KeyToken = parts[3], parts[4]
	r.Key, _ = topology.KeyFromToken(r.KeyToken)
	r.Partition = topology.PartitionOfToken(r.KeyToken, s.Names.Partitions())
	return r, true
}

// Parked reads the parked stream's messages matching f.
func (s *Source) Parked(ctx context.Context, f Filter) ([]ParkedMsg, error) {
	var out []ParkedMsg
	stream := s.Names.ParkedStream()
	_, err := s.read(ctx, readOpts{what: "parked", stream: stream, filters: []string{s.Names.ParkedFilter(f.Type, f.token())}},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			out = append(out, parkedMsg(m.Subject(), m.Data(), m.Headers(), stream, md.Sequence.Stream, md.Timestamp))
			return true, nil
		})
	return out, err
}

func parkedMsg(subject string, data []byte, h nats.Header, stream string, seq uint64, at time.Time) ParkedMsg {
	p := ParkedMsg{ID: EventID(data, h, stream, seq), Seq: seq, At: at,
		Reason: h.Get(lane.HeaderParkReason), Error: h.Get(lane.HeaderParkError)}
	if parts := strings.Split(subject, "."); len(parts) == 5 {
		p.Stage, p.Type, p.KeyToken = topology.Stage(parts[2]), parts[3], parts[4]
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(lane.HeaderParkedAt)); err == nil {
		p.At = t
	}
	return p
}

// Floors reads the enricher lanes' ack floors. A partition whose consumer
// does not exist is left out (its events count as in flight).
func (s *Source) Floors(ctx context.Context) (map[int]uint64, error) {
	out := map[int]uint64{}
	for p := 0; p < s.Names.Partitions(); p++ {
		c, err := s.JS.Consumer(ctx, s.Names.EventsStream(), s.Names.ConsumerName(topology.StageEnricher, p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("enricher lane %d: %w", p, err)
		}
		out[p] = c.CachedInfo().AckFloor.Stream
	}
	return out, nil
}

// InDispatch looks up which of the given event ids (by key token) have a
// CRM request in the dispatch stream now. The dispatch stream is a work
// queue (no second consumer may read it), so the messages are fetched
// one by one with the key's subject filter.
func (s *Source) InDispatch(ctx context.Context, want map[string][]string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(want) == 0 {
		return out, nil
	}
	stream := s.Names.DispatchStream()
	st, err := s.JS.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	var done uint64
	for tok, ids := range want {
		left := make(map[string]bool, len(ids))
		for _, id := range ids {
			left[id] = true
		}
		filter := s.Names.DispatchFilter("", tok)
		for seq := uint64(1); len(left) > 0; {
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", stream, err)
			}
			id := EventID(m.Data, m.Header, stream, m.Sequence)
			if left[id] {
				out[id] = true
				delete(left, id)
			}
			seq = m.Sequence + 1
			done++
			if s.Progress != nil && done%readBatch == 0 {
				s.Progress("dispatch", done, 0)
			}
		}
	}
	return out, nil
}

// auditRecord is the part of an audit-stream record a reconciliation
// reads (lane.DiscardRecord on <prefix>.audit.parked).
type auditRecord struct {
	Action string         `json:"action"`
	Stage  topology.Stage `json:"stage"`
	Key    string         `json:"key"`
	By     string         `json:"by"`
	At     time.Time      `json:"at"`
	Reason string         `json:"reason"`
}

// Discards reads the discards of parked keys recorded from since on. No
// audit stream means none.
func (s *Source) Discards(ctx context.Context, f Filter, since time.Time) ([]Discard, error) {
	var out []Discard
	_, err := s.read(ctx, readOpts{what: "audit", stream: s.Names.AuditStream(),
		filters: []string{s.Names.AuditSubject("parked")}, since: since},
		func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
			var r auditRecord
			if json.Unmarshal(m.Data(), &r) != nil || r.Action != "discard" || r.Key == "" {
				return true, nil
			}
			if f.Key != "" && r.Key != f.Key {
				return true, nil
			}
			out = append(out, Discard{Stage: r.Stage, KeyToken: topology.KeyToken(r.Key), At: r.At, By: r.By, Reason: r.Reason})
			return true, nil
		})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	return out, err
}

// Rounds returns which of the key tokens of want have a round under way at
// an outbound stage: their parked-keys entry says held for a retry or
// being replayed, so their messages move between the parked stream and
// the stage's input (a replayed message that fails again is parked behind
// once more) and a look at one stream after the other can miss them. It
// reads the bucket's stream leader.
func (s *Source) Rounds(ctx context.Context, want map[string][]string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(want) == 0 {
		return out, nil
	}
	b, err := s.JS.KeyValue(ctx, s.Names.ParkedKeysBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", s.Names.ParkedKeysBucket(), err)
	}
	kv := leaderkv.Wrap(b, s.JS)
	for tok := range want {
		for _, stage := range []topology.Stage{topology.StageEnricher, topology.StageDispatcher} {
			e, err := kv.Get(ctx, topology.ParkedKeyName(stage, tok))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("bucket %s: %w", s.Names.ParkedKeysBucket(), err)
			}
			var pk lane.ParkedKey
			if err := json.Unmarshal(e.Value(), &pk); err != nil {
				continue // not an entry of ours
			}
			if pk.Held || pk.State == lane.StateReplaying {
				out[tok] = true
			}
		}
	}
	return out, nil
}
