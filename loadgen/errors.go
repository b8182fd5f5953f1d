package loadgen

import "errors"

var (
	// ErrGaveUp means an event could not be published within
	// PublishOptions.MaxAttempts; its key's later events were not sent (to
	// keep per-key order). The caller treats the run as failed or retries
	// the plan (ids are stable, so the server deduplicates).
	ErrGaveUp = errors.New("loadgen: gave up publishing")
	// ErrRejected means the server refused a batch with a non-retryable
	// status (4xx other than 408/429); the batch's keys were stopped. The
	// caller fixes the events or the server's catalog.
	ErrRejected = errors.New("loadgen: events rejected")
)
