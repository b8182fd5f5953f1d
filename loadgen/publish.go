package loadgen

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/retry"
	"sluice.dev/mesh/topology"
)

// PublishOptions tune a publisher.
type PublishOptions struct {
	// Rate caps events per second; 0 publishes as fast as the server acks.
	Rate float64 `yaml:"rate"`
	// Concurrency bounds the work in flight: JetStream, the events awaiting
	// their ack (default 256); HTTP, the parallel requests (default 4).
	// Either way a key has at most one event (or batch) in flight.
	Concurrency int `yaml:"concurrency"`
	// BatchSize is the number of events per HTTP request. Default 100.
	BatchSize int `yaml:"batch_size"`
	// MaxAttempts bounds the attempts per event (JetStream) or batch
	// (HTTP); 0 retries until ctx ends. Retries reuse the event ids.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryWait is the first wait between attempts; it doubles up to 2s.
	// Default 20ms.
	RetryWait time.Duration `yaml:"retry_wait"`
	// AckTimeout is how long PublishJetStream waits for an ack before it
	// publishes the event again (same id). Default 5s.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// HTTPClient sends the HTTP batches; default a client keeping
	// Concurrency connections alive.
	HTTPClient *http.Client `yaml:"-"`
	// Header is added to every HTTP request (e.g. Authorization).
	Header http.Header `yaml:"-"`
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
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	return o
}

// Result counts what a publisher did.
type Result struct {
	// Published is the number of events the server acknowledged as stored.
	Published int `json:"published"`
	// Duplicates is the number of those the server already had (dedupe by
	// Nats-Msg-Id, e.g. after a retry or a second run; over HTTP as
	// reported in ingest's 202 results).
	Duplicates int `json:"duplicates"`
	// Retries is the number of attempts beyond the first.
	Retries int `json:"retries"`
	// Failed is the number of events not known to be stored: given up,
	// rejected, held back behind such an event of their key, or cut off by
	// ctx (an event in flight when ctx ended may still have been stored).
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

// fanOut sends events to opts.Concurrency workers (PublishHTTP's), a key
// always to the same one, at opts.Rate.
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
}

// next counts a failed attempt and returns the wait before the next one,
// at least atLeast; ok is false when the attempts are used up.
func (r *retrier) next(atLeast time.Duration) (d time.Duration, ok bool) {
	r.attempt++
	if r.opts.MaxAttempts > 0 && r.attempt >= r.opts.MaxAttempts {
		return 0, false
	}
	wait := retry.Policy{Delay: r.opts.RetryWait, Max: 2 * time.Second}.Backoff(r.attempt - 1)
	return max(wait, atLeast), true
}

// again waits before the next attempt, at least atLeast; it returns false
// when the attempts are used up or ctx ended.
func (r *retrier) again(ctx context.Context, atLeast time.Duration) bool {
	d, ok := r.next(atLeast)
	if !ok {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
