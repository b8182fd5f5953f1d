package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/topology"
)

// PublishOptions tune a publisher.
type PublishOptions struct {
	// Rate caps events per second; 0 publishes as fast as the server acks.
	Rate float64
	// Concurrency is the number of keys in flight at once (each key's
	// events go one after another). Default 32 for JetStream, 4 for HTTP.
	Concurrency int
	// BatchSize is the number of events per HTTP request. Default 100.
	BatchSize int
	// MaxAttempts bounds the attempts per event (JetStream) or batch
	// (HTTP); 0 retries until ctx ends. Retries reuse the event ids.
	MaxAttempts int
	// RetryWait is the first wait between attempts; it doubles up to 2s.
	// Default 20ms.
	RetryWait time.Duration
	// HTTPClient sends the HTTP batches; default a client keeping
	// Concurrency connections alive.
	HTTPClient *http.Client
	// Header is added to every HTTP request (e.g. Authorization).
	Header http.Header
}

func (o PublishOptions) withDefaults(concurrency int) PublishOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = concurrency
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.RetryWait <= 0 {
		o.RetryWait = 20 * time.Millisecond
	}
	return o
}

// Result counts what a publisher did.
type Result struct {
	// Published is the number of events the server acknowledged as stored.
	Published int `json:"published"`
	// Duplicates is the number of those the server already had (JetStream
	// dedupe by Nats-Msg-Id, e.g. after a retry or a second run).
	Duplicates int `json:"duplicates"`
	// Retries is the number of attempts beyond the first.
	Retries int `json:"retries"`
	// Failed is the number of events not published (given up, rejected,
	// held back behind such an event of their key, or cut off by ctx).
	Failed int `json:"failed"`
	// Requests is the number of HTTP requests sent (HTTP only).
	Requests int `json:"requests"`
	// Elapsed is the wall time of the run.
	Elapsed time.Duration `json:"elapsed"`
}

// PerSecond is the published rate.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Published) / r.Elapsed.Seconds()
}

func (r *Result) add(o Result) {
	r.Published += o.Published
	r.Duplicates += o.Duplicates
	r.Retries += o.Retries
	r.Requests += o.Requests
}

// worker consumes one lane of events (all events of its keys, in order)
// and returns its counts and the first error per failed key.
type worker func(ctx context.Context, in <-chan *envelope.Envelope) (Result, []error)

// fanOut sends events to opts.Concurrency workers, a key always to the
// same one, at opts.Rate.
func fanOut(ctx context.Context, events []*envelope.Envelope, opts PublishOptions, buf int, work worker) (Result, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lim *rate.Limiter
	if opts.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(opts.Rate), max(1, int(opts.Rate/100)))
	}
	n := opts.Concurrency
	chans := make([]chan *envelope.Envelope, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		res  Result
		errs []error
	)
	for i := range chans {
		chans[i] = make(chan *envelope.Envelope, buf)
		wg.Add(1)
		go func(in <-chan *envelope.Envelope) {
			defer wg.Done()
			r, e := work(ctx, in)
			mu.Lock()
			res.add(r)
			errs = append(errs, e...)
			mu.Unlock()
		}(chans[i])
	}
	var ctxErr error
send:
	for _, ev := range events {
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				ctxErr = err // ctx ended, or would end before the next slot
				break
			}
		}
		select {
		case chans[topology.PartitionOfToken(ev.Key, n)] <- ev:
		case <-ctx.Done():
			ctxErr = ctx.Err()
			break send
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Failed = len(events) - res.Published
	if ctxErr == nil {
		ctxErr = ctx.Err()
	}
	if ctxErr != nil {
		errs = append([]error{ctxErr}, errs...)
	}
	return res, errors.Join(errs...)
}

// retrier paces the attempts of one event or batch.
type retrier struct {
	opts    PublishOptions
	attempt int
	wait    time.Duration
}

// again waits before the next attempt, at least min; it returns false when
// the attempts are used up or ctx ended.
func (r *retrier) again(ctx context.Context, atLeast time.Duration) bool {
	r.attempt++
	if r.opts.MaxAttempts > 0 && r.attempt >= r.opts.MaxAttempts {
		return false
	}
	if r.wait == 0 {
		r.wait = r.opts.RetryWait
	}
	d := max(r.wait, atLeast)
	r.wait = min(2*r.wait, 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// MsgPublisher is the part of jetstream.JetStream PublishJetStream needs.
type MsgPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// PublishJetStream publishes each event to names.EventSubject(type, key)
// with Nats-Msg-Id = event id and waits for the ack. A key's next event is
// published only after the previous one was acked; different keys go in
// parallel (opts.Concurrency). A failed publish is retried with the same
// message id, so the stream stores it once. It returns when every event
// was published, gave up (opts.MaxAttempts) or ctx ended.
func PublishJetStream(ctx context.Context, js MsgPublisher, names topology.Names, events []*envelope.Envelope,
	opts PublishOptions) (Result, error) {
	opts = opts.withDefaults(32)
	return fanOut(ctx, events, opts, 256, func(ctx context.Context, in <-chan *envelope.Envelope) (Result, []error) {
		var res Result
		var errs []error
		failed := map[string]bool{}
		for ev := range in {
			if failed[ev.Key] || ctx.Err() != nil {
				continue
			}
			data, err := ev.Marshal()
			if err != nil {
				failed[ev.Key] = true
				errs = append(errs, fmt.Errorf("%w: %s: %w", ErrGaveUp, ev.ID, err))
				continue
			}
			msg := &nats.Msg{Subject: names.EventSubject(ev.Type, ev.Key), Data: data,
				Header: nats.Header{nats.MsgIdHdr: []string{ev.ID}}}
			r := retrier{opts: opts}
			for {
				ack, err := js.PublishMsg(ctx, msg)
				if err == nil {
					res.Published++
					if ack.Duplicate {
						res.Duplicates++
					}
					break
				}
				if ctx.Err() != nil {
					break
				}
				if !r.again(ctx, 0) {
					if ctx.Err() == nil {
						failed[ev.Key] = true
						errs = append(errs, fmt.Errorf("%w: %s after %d attempts: %w", ErrGaveUp, ev.ID, r.attempt, err))
					}
					break
				}
				res.Retries++
			}
		}
		return res, errs
	})
}
