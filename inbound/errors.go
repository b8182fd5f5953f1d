package inbound

import (
	"errors"

	"sluice.dev/mesh/service"
)

var (
	// ErrSignature means a webhook's signature is missing, malformed or
	// matches none of the source's secrets. The receiver answers 401 and
	// stores nothing; the CRM (or an attacker) gets no further detail.
	ErrSignature = errors.New("inbound: signature invalid")
	// ErrTimestamp means the signed timestamp is missing or outside
	// inbound.tolerance (a replay or a badly skewed clock). 401, nothing
	// stored.
	ErrTimestamp = errors.New("inbound: timestamp outside tolerance")
	// ErrUnreadable means an authenticated webhook item could not be routed
	// (no type, no usable id, a body that is not JSON or that the source's
	// envelope cannot split). It was stored (the CRM got 2xx) and the writer
	// parks it with the reasons; fix the envelope and replay it.
	ErrUnreadable = errors.New("inbound: webhook item unreadable")
	// ErrInvalid means a stored webhook item failed validation (schema,
	// semantic or referential checks). The writer parks it with every
	// problem listed; nothing reaches the database.
	ErrInvalid = errors.New("inbound: webhook item invalid")
	// ErrUnknownType means the item's type is not in the inbound catalog.
	// The writer parks it; add the type and replay it.
	ErrUnknownType = errors.New("inbound: unknown webhook type")
	// ErrNotStarted is returned by Restart before Start: the caller starts
	// the service first.
	ErrNotStarted = service.ErrNotStarted
	// ErrMapping means a jq expression of the type failed on the item or
	// gave an unusable value. The writer parks it; fix the mapping, replay.
	ErrMapping = errors.New("inbound: mapping failed")
	// ErrRowMissing means an update-mode write found no row with the key.
	// The item is parked.
	ErrRowMissing = errors.New("inbound: row to update missing")
	// ErrRejected means the database refused the values themselves (a
	// constraint or type error). Retrying cannot help: the item is parked.
	ErrRejected = errors.New("inbound: database rejected the values")
	// ErrUnknownScheme means inbound.sources[].scheme names no registered
	// verifier. New fails; fix the config.
	ErrUnknownScheme = errors.New("inbound: unknown signature scheme")
	// ErrStarted is returned by Start on a running service.
	ErrStarted = service.ErrStarted
)
