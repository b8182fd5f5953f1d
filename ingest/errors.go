package ingest

import (
	"errors"

	"sluice.dev/mesh/service"
)

var (
	// ErrInvalidEvents means at least one event of a request is invalid
	// (unreadable JSON, a missing or malformed field, an unknown type, a
	// schema violation). Nothing of the request was stored. The producer
	// fixes the events named in the reply (HTTP 400) and sends them again.
	ErrInvalidEvents = errors.New("invalid events")
	// ErrTooLarge means the body exceeds ingest.max_body_bytes or carries
	// more than ingest.max_batch events. Nothing was stored. The producer
	// splits the batch (HTTP 413).
	ErrTooLarge = errors.New("request too large")
	// ErrUnsupportedMediaType means the body is neither application/json
	// nor application/x-ndjson. The producer sets Content-Type (HTTP 415).
	ErrUnsupportedMediaType = errors.New("unsupported content type")
	// ErrUnauthorized means tokens are configured and the request had no
	// valid bearer token. The producer fixes its credentials (HTTP 401).
	ErrUnauthorized = errors.New("missing or invalid bearer token")
	// ErrUnavailable means JetStream did not ack every event in time (or the
	// service is stopping). Some events may be stored. The producer retries
	// the whole request with the same event ids after Retry-After; dedupe
	// (Nats-Msg-Id) keeps that safe within topology.duplicate_window
	// (HTTP 503).
	ErrUnavailable = errors.New("event store unavailable")
	// ErrSourceForbidden means an authenticated producer sent an event whose
	// source is not its own (the token's name). Nothing of the request was
	// stored. The producer leaves source empty or sends its own name
	// (HTTP 403).
	ErrSourceForbidden = errors.New("source not allowed for this token")
	// ErrConflict means an event's id is already stored (within
	// topology.duplicate_window) with a different body or key, or by another
	// producer. The conflicting event was not stored; the stored one is
	// named in the result (its key). Events of the request before it are
	// stored, later ones not sent. The producer gives the event a new id
	// (ids are the producer's: prefix them with its name) and retries the
	// whole request with the same ids for the others (HTTP 409).
	ErrConflict = errors.New("event id conflict")
	// ErrAlreadyStarted means Start was called twice. The caller has a bug.
	ErrAlreadyStarted = service.ErrStarted
)
