// Package crmreq defines the CRM-ready request the enricher publishes to the
// dispatch stream and the dispatcher sends. It is self-describing, so an
// operator reading the dispatch stream with the nats CLI sees exactly what
// will be sent.
package crmreq

import (
	"encoding/json"
	"time"
)

// Request is the body of a message on <prefix>.dispatch.<P>.<type>.<key>.
// The message's Nats-Msg-Id header is EventID.
type Request struct {
	// EventID is the envelope id: the CRM's Idempotency-Key.
	EventID string `json:"event_id"`
	// Type and Key are the envelope's type and (unescaped) ordering key.
	Type string `json:"type"`
	Key  string `json:"key"`
	// OccurredAt is the envelope's occurred_at.
	OccurredAt time.Time `json:"occurred_at"`
	// AcceptedAt is when the events stream stored the event (produce time,
	// for produce→CRM latency).
	AcceptedAt time.Time `json:"accepted_at"`
	// Object is the CRM object; with IDKey it addresses the id map entry.
	Object string `json:"object,omitempty"`
	// IDKey is the entity whose CRM id is remembered (catalog id_key; the
	// event key by default).
	IDKey string `json:"id_key,omitempty"`
	// Mode is send, create, update or upsert (see catalog.Target).
	Mode string `json:"mode"`
	// Method and Path of a send or create request.
	Method string `json:"method"`
	Path   string `json:"path,omitempty"`
	// UpdateMethod and UpdatePath ("{crm_id}" replaced) of an update.
	UpdateMethod string `json:"update_method,omitempty"`
	UpdatePath   string `json:"update_path,omitempty"`
	// IDFrom is the jq expression that reads the CRM id from a create response.
	IDFrom string `json:"id_from,omitempty"`
	// Body is the JSON body built by the type's mapping.
	Body json.RawMessage `json:"body"`
	// Find is the lookup the dispatcher sends to find a record an
	// uncertain create may have made (catalog crm.find), built by the
	// enricher from the event. Nil: no lookup.
	Find *Find `json:"find,omitempty"`
	// ConflictIDFrom is the jq expression that reads the existing record's
	// id from a 409/422 answer to a create (catalog crm.conflict_id_from).
	ConflictIDFrom string `json:"conflict_id_from,omitempty"`
}

// Find is a ready-to-send lookup request.
type Find struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	// IDFrom is jq over the answer: the found id, or null/empty for none.
	IDFrom string `json:"id_from"`
	// BeforeCreate: look up before the first create too.
	BeforeCreate bool `json:"before_create,omitempty"`
}

// Headers of every CRM request. The CRM simulator reads the same names.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderEventID        = "X-Sluice-Event-Id"
	HeaderKey            = "X-Sluice-Key"
	HeaderType           = "X-Sluice-Type"
	HeaderOccurredAt     = "X-Sluice-Occurred-At"
)
