package topology

import "errors"

var (
	// ErrBadSubject means a subject does not have the shape the topology
	// defines. The caller parks the message: it cannot be routed.
	ErrBadSubject = errors.New("topology: subject has the wrong shape")
	// ErrPartitionsChanged means the existing events stream was created with a
	// different partition count. The caller refuses to start: changing N moves
	// keys between lanes and breaks per-key order unless the drain procedure in
	// docs/runbook.md is followed.
	ErrPartitionsChanged = errors.New("topology: partition count differs from the existing stream")
	// ErrBadKey means a key is empty, too long or not valid UTF-8. The caller
	// rejects the event (HTTP 400 at ingest, park in a lane).
	ErrBadKey = errors.New("topology: invalid key")
)
