package enricher

import (
	"errors"

	"sluice.dev/mesh/service"
)

var (
	// ErrLookupCheck means a catalog lookup names a table or column the
	// product database does not have (or the database could not be asked).
	// Start returns it; the caller fixes the catalog or the database and
	// restarts.
	ErrLookupCheck = errors.New("enricher: lookup table check failed")
	// ErrRowMissing means a referenced row was not in the database. Within
	// lookup_grace the lane retries; after it the event is parked.
	ErrRowMissing = errors.New("enricher: referenced row missing")
	// ErrMapping means a jq expression of the type failed on the event or
	// gave no value. The event is parked; fix the mapping and replay it.
	ErrMapping = errors.New("enricher: mapping failed")
	// ErrSubjectMismatch means the stored subject's type or key token does
	// not match the envelope (a raw publisher used the wrong subject). The
	// event is parked: its partition, and so its order, cannot be trusted.
	ErrSubjectMismatch = errors.New("enricher: subject does not match envelope")
	// ErrStarted is returned by Start on a running service.
	ErrStarted = service.ErrStarted
)
