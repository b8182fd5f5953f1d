package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/retry"
)

// EventsPath is the ingest endpoint PublishHTTP posts to.
const EventsPath = "/v1/events"

// PublishHTTP posts the events as NDJSON batches (opts.BatchSize lines) to
// baseURL + "/v1/events". A key's events travel in order: a batch holding
// a key's event is sent only after the batch with its previous event was
// answered 2xx (ingest answers 202 with per-event results; duplicates
// there are counted). 408, 425, 429 and 5xx answers and network errors are
// retried with the same body (same ids; ingest deduplicates), waiting at
// least Retry-After; other answers reject the batch (ErrRejected) and stop
// its keys. It returns when every event was sent, given up or ctx ended.
func PublishHTTP(ctx context.Context, baseURL string, events []*envelope.Envelope, opts PublishOptions) (Result, error) {
	opts = opts.withDefaults(4)
	client := opts.HTTPClient
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.Concurrency
		client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
	}
	url := strings.TrimRight(baseURL, "/") + EventsPath
	return fanOut(ctx, events, opts, 4*opts.BatchSize, func(ctx context.Context, in <-chan *envelope.Envelope) (Result, []error) {
		w := httpWorker{ctx: ctx, opts: opts, client: client, url: url, failed: map[string]bool{}}
		w.run(in)
		return w.res, w.errs
	})
}

type httpWorker struct {
	ctx    context.Context
	opts   PublishOptions
	client *http.Client
	url    string
	failed map[string]bool
	res    Result
	errs   []error
	batch  []*envelope.Envelope
	body   bytes.Buffer
}

func (w *httpWorker) run(in <-chan *envelope.Envelope) {
	for ev := range in {
		w.batch = w.batch[:0]
		w.add(ev)
		closed := false
	fill:
		for len(w.batch) < w.opts.BatchSize {
			select {
			case ev, ok := <-in:
				if !ok {
					closed = true
					break fill
				}
				w.add(ev)
			default:
				break fill
			}
		}
		if len(w.batch) > 0 && w.ctx.Err() == nil {
			w.send()
		}
		if closed {
			return
		}
	}
}

func (w *httpWorker) add(ev *envelope.Envelope) {
	if !w.failed[ev.Key] {
		w.batch = append(w.batch, ev)
	}
}

func (w *httpWorker) stop(err error) {
	for _, ev := range w.batch {
		w.failed[ev.Key] = true
	}
	w.errs = append(w.errs, err)
}

// send posts the batch until it is accepted, rejected or given up.
func (w *httpWorker) send() {
	w.body.Reset()
	enc := json.NewEncoder(&w.body)
	for _, ev := range w.batch {
		if err := enc.Encode(ev); err != nil {
			w.stop(fmt.Errorf("%w: encode %s: %w", ErrRejected, ev.ID, err))
			return
		}
	}
	first, last := w.batch[0].ID, w.batch[len(w.batch)-1].ID
	r := retrier{opts: w.opts}
	for {
		status, retryAfter, dups, msg, err := w.post()
		switch {
		case err == nil && status/100 == 2:
			w.res.Published += len(w.batch)
			w.res.Duplicates += dups
			return
		case err == nil && !retryable(status):
			w.stop(fmt.Errorf("%w: batch %s..%s: HTTP %d: %s", ErrRejected, first, last, status, msg))
			return
		case w.ctx.Err() != nil:
			return
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d: %s", status, msg)
		}
		if !r.again(w.ctx, retryAfter) {
			if w.ctx.Err() == nil {
				w.stop(fmt.Errorf("%w: batch %s..%s after %d attempts: %w", ErrGaveUp, first, last, r.attempt, err))
			}
			return
		}
		w.res.Retries++
	}
}

func retryable(status int) bool {
	return retry.Retryable(status) || status == http.StatusTooEarly
}

// post sends the body once.
func (w *httpWorker) post() (status int, retryAfter time.Duration, dups int, msg string, err error) {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.url, bytes.NewReader(w.body.Bytes()))
	if err != nil {
		return 0, 0, 0, "", err
	}
	for k, v := range w.opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	w.res.Requests++
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, 0, 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = min(time.Duration(s)*time.Second, 30*time.Second)
	}
	var ack struct { // ingest's 202 body
		Results []struct {
			Duplicate bool `json:"duplicate"`
		} `json:"results"`
	}
	if resp.StatusCode/100 == 2 && json.Unmarshal(b, &ack) == nil {
		for _, r := range ack.Results {
			if r.Duplicate {
				dups++
			}
		}
	}
	return resp.StatusCode, retryAfter, dups, string(bytes.TrimSpace(b[:min(len(b), 512)])), nil
}
