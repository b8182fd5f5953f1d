package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Result is the outcome of one event of a publish request.
type Result struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
	// Key is the ordering key, derived by the type when the producer sent none.
	Key string `json:"key"`
	// Stored is true once JetStream acked the event.
	Stored bool `json:"stored"`
	// StreamSeq is the event's sequence in the events stream (stored only).
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Duplicate: JetStream already had this id with the same event (an
	// earlier send was stored); StreamSeq is the stored one's.
	Duplicate bool `json:"duplicate"`
	// Conflict says why the event was refused although its id is stored:
	// the stored event has another key, another body or another producer
	// (409 only). Key is then the stored event's key, never the sent one.
	Conflict string `json:"conflict,omitempty"`
	// Error says why the event is not known to be stored (503 only).
	Error string `json:"error,omitempty"`
}

// Response is the JSON body of every ingest reply, HTTP or NATS.
type Response struct {
	// Error is set on every failure ("invalid events", ...).
	Error string `json:"error,omitempty"`
	// Errors lists the problems of a rejected request, per event.
	Errors []EventError `json:"errors,omitempty"`
	// Results has one entry per event, in request order: after a publish
	// (202, or 503 saying which were stored) or a validation (200).
	Results []Result `json:"results,omitempty"`
}

// request is a decoded-from-transport ingest request.
type request struct {
	body    []byte
	batch   bool   // NDJSON
	source  string // the authenticated producer (token name): default and only allowed source; "" = any
	publish bool   // store; false: validate only
}

// process validates a request and, if asked, stores it. It returns the
// status code (HTTP semantics, also used for micro error codes) and reply.
func (s *Service) process(ctx context.Context, r request) (int, Response) {
	if int64(len(r.body)) > s.cfg.MaxBodyBytes {
		s.stats.rejectedRequests.Add(1)
		return http.StatusRequestEntityTooLarge, Response{Error: fmt.Sprintf("%s: body exceeds %d bytes (ingest.max_body_bytes)", ErrTooLarge, s.cfg.MaxBodyBytes)}
	}
	var items []item
	var errs []EventError
	if r.batch || isArray(r.body) {
		var err error
		if r.batch {
			items, errs, err = decodeBatch(r.body, s.cfg.MaxBatch)
		} else {
			items, errs, err = decodeArray(r.body, s.cfg.MaxBatch)
		}
		if err != nil {
			s.stats.rejectedRequests.Add(1)
			return http.StatusRequestEntityTooLarge, Response{Error: fmt.Sprintf("%s: more than %d events (ingest.max_batch)", ErrTooLarge, s.cfg.MaxBatch)}
		}
	} else {
		it, es := decodeSingle(r.body)
		if es == nil {
			items = []item{it}
		}
		errs = es
	}
	events := len(items) + len(errs) // events in the request: decoded + unreadable
	if len(errs) > 0 {
		unreadable := map[int]bool{}
		for _, e := range errs {
			unreadable[e.Index] = true
		}
		events = len(items) + len(unreadable)
	}
	errs = append(errs, s.prepare(items, r.source)...)
	if forbidden := sourceErrors(errs); len(forbidden) > 0 {
		s.stats.rejected.Add(uint64(events))
		return http.StatusForbidden, Response{Error: ErrSourceForbidden.Error(), Errors: capErrors(forbidden)}
	}
	if len(errs) > 0 {
		s.stats.rejected.Add(uint64(events))
		if len(errs) > maxReportedErrors {
			errs = errs[:maxReportedErrors]
		}
		return http.StatusBadRequest, Response{Error: ErrInvalidEvents.Error(), Errors: errs}
	}
	if !r.publish {
		res := make([]Result, len(items))
		for i, it := range items {
			res[i] = Result{Index: it.index, ID: it.env.ID, Key: it.env.Key}
		}
		return http.StatusOK, Response{Results: res}
	}
	res, err := s.store(ctx, items)
	if errors.Is(err, ErrConflict) {
		return http.StatusConflict, Response{Error: err.Error(), Results: res}
	}
	if err != nil {
		s.stats.unavailable.Add(1)
		return http.StatusServiceUnavailable, Response{Error: err.Error(), Results: res}
	}
	return http.StatusAccepted, Response{Results: res}
}

// prepare fills the default source, derives keys and validates every item
// against the catalog; it also refuses an id used twice in one request and,
// for an authenticated producer (source != ""), an event claiming another
// source (field "source", reason starting with errSourceReason).
func (s *Service) prepare(items []item, source string) []EventError {
	var errs []EventError
	seen := make(map[string]int, len(items))
	for _, it := range items {
		e := it.env
		proto := EventError{Index: it.index, Line: it.line, ID: e.ID}
		if e.Source == "" {
			e.Source = source
		} else if source != "" && e.Source != source {
			proto.Field, proto.Reason = "source", fmt.Sprintf("%s: the token of producer %q may only send source %q (or none)",
				errSourceReason, source, source)
			errs = append(errs, proto)
			continue
		}
		if err := s.deps.Catalog.Prepare(e); err != nil {
			errs = append(errs, fieldErrors(err, proto)...)
			continue
		}
		if first, dup := seen[e.ID]; dup {
			proto.Field, proto.Reason = "id", fmt.Sprintf("the same id is used by event %d of this request", first)
			errs = append(errs, proto)
			continue
		}
		seen[e.ID] = it.index
	}
	return errs
}

// errSourceReason starts the reason of a source the token may not send.
const errSourceReason = "source not allowed"

// sourceErrors returns the errors about a forbidden source.
func sourceErrors(errs []EventError) []EventError {
	var out []EventError
	for _, e := range errs {
		if e.Field == "source" && strings.HasPrefix(e.Reason, errSourceReason) {
			out = append(out, e)
		}
	}
	return out
}

func capErrors(errs []EventError) []EventError {
	if len(errs) > maxReportedErrors {
		return errs[:maxReportedErrors]
	}
	return errs
}

// waves groups item positions so that wave i holds the i-th event of every
// key, keys in order of first appearance. Publishing wave by wave, waiting
// for every ack in between, never has two events of one key in flight.
func waves(items []item) [][]int {
	nth := make(map[string]int, len(items))
	var out [][]int
	for i, it := range items {
		w := nth[it.env.Key]
		nth[it.env.Key] = w + 1
		if w == len(out) {
			out = append(out, nil)
		}
		out[w] = append(out[w], i)
	}
	return out
}

// store publishes items to the events stream in waves and waits for every
// ack. On a JetStream error or timeout it stops after the failing wave and
// returns ErrUnavailable with results saying which events were stored.
func (s *Service) store(ctx context.Context, items []item) ([]Result, error) {
	// The request's own context is not used for cancellation: once
	// publishing started we finish (bounded by PublishTimeout), so a client
	// hanging up or a graceful stop does not cut a batch short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	defer cancel()
	res := make([]Result, len(items))
	for i, it := range items {
		res[i] = Result{Index: it.index, ID: it.env.ID, Key: it.env.Key}
	}
	var failure error
	conflicts := 0
	dups := &dupChecker{s: s}
	for _, wave := range waves(items) {
		if failure != nil || conflicts > 0 {
			for _, i := range wave {
				res[i].Error = "not sent: an earlier part of the request was not stored"
			}
			continue
		}
		futures := make([]jetstream.PubAckFuture, len(wave))
		for j, i := range wave {
			f, err := s.publishAsync(items[i])
			if err != nil {
				res[i].Error = err.Error()
				failure = err
				continue
			}
			futures[j] = f
		}
		acks := make([]*jetstream.PubAck, len(wave))
		for j, i := range wave {
			if futures[j] == nil {
				continue
			}
			ack, err := await(ctx, futures[j])
			if err != nil {
				res[i].Error = err.Error()
				failure = err
				continue
			}
			acks[j] = ack
		}
		// One lookup per duplicate only (is the stored event this one?),
		// concurrently, so a retried batch does not pay a round trip each.
		verdicts := dups.checkAll(ctx, items, wave, acks)
		for j, i := range wave {
			ack, v := acks[j], verdicts[j]
			switch {
			case ack == nil:
				continue
			case v.err != nil:
				res[i].Error = v.err.Error()
				failure = v.err
				continue
			case v.conflict != "":
				res[i].Key, res[i].Conflict = v.key, v.conflict
				conflicts++
				s.stats.conflicts.Add(1)
				continue
			case ack.Duplicate:
				res[i].Key = v.key
			}
			res[i].Stored, res[i].StreamSeq, res[i].Duplicate = true, ack.Sequence, ack.Duplicate
			s.stats.noteStored(ack)
		}
	}
	if failure == nil && conflicts > 0 {
		s.log.Info().Int("events", len(items)).Int("conflicts", conflicts).
			Msg("event id already stored with another key, body or producer; replying 409")
		return res, fmt.Errorf("%w: %d event(s) reuse an id stored with another key, body or producer; nothing after them was sent",
			ErrConflict, conflicts)
	}
	if failure != nil {
		stored := 0
		for _, r := range res {
			if r.Stored {
				stored++
			}
		}
		s.log.Warn().Err(failure).Int("events", len(items)).Int("stored", stored).
			Msg("JetStream did not ack every event; replying 503")
		return res, fmt.Errorf("%w: %d of %d events stored, retry the whole request with the same ids: %v",
			ErrUnavailable, stored, len(items), failure)
	}
	return res, nil
}

func (s *Service) publishAsync(it item) (jetstream.PubAckFuture, error) {
	body, err := it.env.Marshal()
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.deps.Names.EventSubject(it.env.Type, it.env.Key))
	m.Header.Set(nats.MsgIdHdr, it.env.ID)
	m.Data = body
	return s.deps.JS.PublishMsgAsync(m)
}

func await(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, errors.New("timed out waiting for the JetStream ack (ingest.publish_timeout)")
		}
		return nil, ctx.Err()
	}
}

// stats are the service's counters, reported by the micro STATS endpoint.
type stats struct {
	accepted, duplicates                     atomic.Uint64
	conflicts                                atomic.Uint64
	rejected, rejectedRequests, unauthorized atomic.Uint64
	unavailable                              atomic.Uint64
	lastSeq                                  atomic.Uint64
	lastAt                                   atomic.Int64 // unix nanos
}

func (st *stats) noteStored(ack *jetstream.PubAck) {
	st.accepted.Add(1)
	if ack.Duplicate {
		st.duplicates.Add(1)
	}
	for {
		cur := st.lastSeq.Load()
		if ack.Sequence <= cur || st.lastSeq.CompareAndSwap(cur, ack.Sequence) {
			break
		}
	}
	st.lastAt.Store(time.Now().UnixNano())
}
