package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// AsyncPublisher is the part of jetstream.JetStream PublishJetStream needs.
// Create the JetStream context with jetstream.WithPublishAsyncTimeout so
// futures whose ack never arrives are dropped from its pending table.
type AsyncPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// errAckTimeout is the error of an attempt whose ack did not come in
// PublishOptions.AckTimeout.
var errAckTimeout = errors.New("no ack within the ack timeout")

// PublishJetStream publishes each event to names.EventSubject(type, key)
// with Nats-Msg-Id = event id, asynchronously with at most
// opts.Concurrency acks outstanding. A key's next event is published only
// after the previous one was acked, so per-key order holds even when an
// attempt fails; different keys are in flight together. A failed or
// unacknowledged attempt is published again with the same id (the stream
// deduplicates). It returns when every event was acked, given up
// (opts.MaxAttempts: the key's later events are not sent) or ctx ended.
//
// The throughput ceiling is about keys / ack latency: a plan with few keys
// cannot go faster than one event per key per round trip.
func PublishJetStream(ctx context.Context, js AsyncPublisher, names topology.Names, events []*envelope.Envelope,
	opts PublishOptions) (Result, error) {
	opts = opts.withDefaults(256)
	r := &jsRun{
		js: js, names: names, opts: opts, ctx: ctx,
		done:   make(chan attempt, opts.Concurrency),
		retry:  make(chan *jsEvent, opts.Concurrency),
		queued: map[string][]*jsEvent{},
		failed: map[string]bool{},
	}
	start := time.Now()
	err := r.run(events)
	r.res.Elapsed = time.Since(start)
	r.res.Failed = len(events) - r.res.Published
	if err != nil {
		r.errs = append([]error{err}, r.errs...)
	}
	return r.res, errors.Join(r.errs...)
}

// jsEvent is one event on its way.
type jsEvent struct {
	ev   *envelope.Envelope
	data []byte
	try  retrier
}

type attempt struct {
	e   *jsEvent
	ack *jetstream.PubAck
	err error
}

type jsRun struct {
	js    AsyncPublisher
	names topology.Names
	opts  PublishOptions
	ctx   context.Context

	done  chan attempt  // results of attempts, at most Concurrency outstanding
	retry chan *jsEvent // events whose retry wait ended
	// queued holds, per key with an event in flight, the key's events
	// waiting behind it; a key is in flight iff it is in the map.
	queued   map[string][]*jsEvent
	failed   map[string]bool
	inFlight int // attempts outstanding or waiting to be retried
	res      Result
	errs     []error
}

func (r *jsRun) run(events []*envelope.Envelope) error {
	var lim *rate.Limiter
	if r.opts.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(r.opts.Rate), max(1, int(r.opts.Rate/100)))
	}
	for _, ev := range events {
		if lim != nil {
			if err := lim.Wait(r.ctx); err != nil {
				return err // ctx ended, or would end before the next slot
			}
		}
		for r.inFlight >= r.opts.Concurrency {
			if err := r.wait(); err != nil {
				return err
			}
		}
		if err := r.drain(); err != nil {
			return err
		}
		r.offer(ev)
	}
	for r.inFlight > 0 {
		if err := r.wait(); err != nil {
			return err
		}
	}
	return nil
}

// offer publishes ev now, or queues it behind its key's event in flight.
func (r *jsRun) offer(ev *envelope.Envelope) {
	if r.failed[ev.Key] {
		return
	}
	e := &jsEvent{ev: ev, try: retrier{opts: r.opts}}
	if q, busy := r.queued[ev.Key]; busy {
		r.queued[ev.Key] = append(q, e)
		return
	}
	r.queued[ev.Key] = nil
	r.inFlight++
	r.publish(e)
}

// publish sends one attempt of e; its result arrives on r.done.
func (r *jsRun) publish(e *jsEvent) {
	if e.data == nil {
		b, err := e.ev.Marshal()
		if err != nil {
			r.done <- attempt{e: e, err: err}
			return
		}
		e.data = b
	}
	// A fresh message per attempt: the client sets Reply on publish.
	msg := &nats.Msg{Subject: r.names.EventSubject(e.ev.Type, e.ev.Key), Data: e.data,
		Header: nats.Header{nats.MsgIdHdr: []string{e.ev.ID}}}
	f, err := r.js.PublishMsgAsync(msg)
	if err != nil {
		r.done <- attempt{e: e, err: err}
		return
	}
	timeout := r.opts.AckTimeout
	go func() {
		t := time.NewTimer(timeout)
		defer t.Stop()
		var a attempt
		select {
		case ack := <-f.Ok():
			a = attempt{e: e, ack: ack}
		case err := <-f.Err():
			a = attempt{e: e, err: err}
		case <-t.C:
			a = attempt{e: e, err: errAckTimeout}
		case <-r.ctx.Done():
			return
		}
		r.done <- a // never blocks: one slot per attempt in flight
	}()
}

// drain handles the results that are already there.
func (r *jsRun) drain() error {
	for {
		select {
		case a := <-r.done:
			r.handle(a)
		case e := <-r.retry:
			r.publish(e)
		default:
			return r.ctx.Err()
		}
	}
}

// wait handles at least one result, retry or the end of ctx.
func (r *jsRun) wait() error {
	select {
	case a := <-r.done:
		r.handle(a)
	case e := <-r.retry:
		r.publish(e)
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return nil
}

func (r *jsRun) handle(a attempt) {
	key := a.e.ev.Key
	if a.err == nil {
		r.res.Published++
		if a.ack != nil && a.ack.Duplicate {
			r.res.Duplicates++
		}
		r.next(key)
		return
	}
	d, ok := a.e.try.next(0)
	if !ok {
		r.failed[key] = true
		r.errs = append(r.errs, fmt.Errorf("%w: %s after %d attempts: %w", ErrGaveUp, a.e.ev.ID, a.e.try.attempt, a.err))
		delete(r.queued, key) // its later events are held back for good
		r.inFlight--
		return
	}
	r.res.Retries++
	time.AfterFunc(d, func() {
		select {
		case r.retry <- a.e:
		case <-r.ctx.Done():
		}
	})
}

// next publishes the key's next queued event, or marks the key idle.
func (r *jsRun) next(key string) {
	q := r.queued[key]
	if len(q) == 0 {
		delete(r.queued, key)
		r.inFlight--
		return
	}
	r.queued[key] = q[1:]
	r.publish(q[0])
}
