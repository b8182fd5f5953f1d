// Package ledger is Sluice's delivery ledger: a JetStream stream of what
// happened to every accepted event after it was accepted — enriched
// (forwarded to the dispatch stream), delivered (CRM status, attempts,
// response time, produce→CRM latency) or parked (stage, reason) — and the
// reconciliation that proves from those records that nothing accepted was
// lost or reordered (sluice audit), plus the life of one event (sluice
// trace).
//
// "Accepted" is not written here: the events stream is its record (a
// producer gets its ack only once the event is stored there, whether it
// came through ingest or straight to JetStream), and so is "parked" (the
// parked stream keeps the message until an operator replays or discards
// it). The ledger adds the steps no stream keeps: a dispatch message leaves
// its work-queue stream when the CRM accepted it, and then only the ledger
// remembers that it did.
//
// A record is durable before the message it is about is acked: a Writer
// publishes it asynchronously as soon as the step happened and the lane
// waits for its PubAck just before the ack (Pending.Wait through
// lane.Outcome.Durable or lane.Config.BeforeAck), so the round trip
// overlaps the lane's own work. A record that is not stored holds the
// lane: the message is not acked but redelivered (readers skip a record
// stored twice). So a kill -9, even of a process embedding the server,
// never leaves an acked message without its record (docs/architecture.md,
// "The delivery ledger").
package ledger

import (
	"encoding/json"
	"strconv"
	"time"

	"sluice.dev/mesh/topology"
)

// Step is a step of an event's life recorded in the ledger; it is the
// third token of the record's subject.
type Step string

// The recorded steps.
const (
	// StepEnriched: the enricher mapped the event and forwarded the CRM
	// request to the dispatch stream (stored before the event is acked).
	// Only with ledger.enriched (or ledger.bodies): the delivered and parked
	// records carry when the request was stored and its sequence anyway.
	StepEnriched Step = "enriched"
	// StepDelivered: the CRM answered 2xx (stored before the dispatch
	// message is acked).
	StepDelivered Step = "delivered"
	// StepParked: a stage parked the event (stored before the message is
	// acked; the parked stream keeps the message, this record its history).
	StepParked Step = "parked"
	// StepAttempt: one dispatcher CRM request that did not end the
	// event's delivery: a failed request (status, timeout, connection
	// error), a crm.find lookup, or a create whose outcome is uncertain
	// (CRM.Uncertain: its answer was lost, so the CRM may have created
	// the record). Written before the lane retries, parks or goes on;
	// sluice trace lists every one, sluice audit names the uncertain
	// creates.
	StepAttempt Step = "attempt"
)

// Record is one ledger record: the JSON body of a message on
// <prefix>.ledger.<step>.<type>.<key token>.
type Record struct {
	Step Step `json:"step"`
	// EventID is the envelope id (the CRM's Idempotency-Key). For an event
	// whose envelope cannot be read it is its Nats-Msg-Id or
	// "<stream>:<seq>" (see EventID).
	EventID string `json:"event_id"`
	// Type and KeyToken travel in the subject, not the body; Key and
	// Partition follow from KeyToken. Records read back have all four.
	Type      string `json:"-"`
	KeyToken  string `json:"-"`
	Key       string `json:"-"`
	Partition int    `json:"-"`
	// Stage wrote the record.
	Stage topology.Stage `json:"stage"`
	// At is when the step happened (the writer's clock).
	At time.Time `json:"at"`
	// Seq is the sequence of the message the stage handled in its input
	// stream: the events stream for the enricher, the dispatch stream (the
	// enricher's output) for the dispatcher.
	Seq uint64 `json:"seq"`
	// Deliveries is how often the server delivered that message (1 the
	// first time); Attempts how often this process ran it, InHand how many
	// of those were retries with the message in hand (no new delivery).
	// More deliveries than this process's (Attempts-InHand) means another
	// process had it before and may have sent it to the CRM already (a
	// possible duplicate).
	Deliveries uint64 `json:"deliveries,omitempty"`
	Attempts   int    `json:"attempts,omitempty"`
	InHand     int    `json:"in_hand,omitempty"`
	// AcceptedAt is when the events stream stored the event.
	AcceptedAt time.Time `json:"accepted_at,omitzero"`
	// EnrichedAt is when the dispatch stream stored the enricher's CRM
	// request (dispatcher records; Seq is its sequence).
	EnrichedAt time.Time `json:"enriched_at,omitzero"`
	// Inline marks a dispatcher record written in the enricher's lane
	// (dispatcher.inline): no dispatch stream stored a request, and Seq is
	// the event's sequence in the events stream.
	Inline bool `json:"inline,omitempty"`
	// Replay is the replay id when the message was an operator's replay.
	Replay string `json:"replay,omitempty"`
	// Out is the dispatch subject the enricher forwarded to (enriched).
	Out string `json:"out,omitempty"`
	// Body is the CRM request body the mapping produced, with sensitive
	// fields redacted (enriched, only with ledger.bodies).
	Body json.RawMessage `json:"body,omitempty"`
	// CRM summarises the CRM exchange (delivered; parked by the dispatcher).
	CRM *CRMCall `json:"crm,omitempty"`
	// Reason and Error say why the event was parked.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// CRMCall summarises one CRM exchange. No header value is recorded.
type CRMCall struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// Status is the HTTP status; 0 when the answer came on an earlier
	// attempt (Note says so).
	Status int `json:"status,omitempty"`
	// Took is the CRM's response time.
	Took time.Duration `json:"took_ns,omitempty"`
	// Latency is produce→CRM: the 2xx time minus AcceptedAt.
	Latency time.Duration `json:"latency_ns,omitempty"`
	// CRMID is the record id a create returned.
	CRMID string `json:"crm_id,omitempty"`
	Note  string `json:"note,omitempty"`
	// Kind is what the request was: create, update, send or find.
	Kind string `json:"kind,omitempty"`
	// Error is why no answer came (timeout, connection error), without
	// the URL.
	Error string `json:"error,omitempty"`
	// Response is the CRM's answer body of a failed attempt, cut to 2 KiB.
	Response string `json:"response,omitempty"`
	// Headers are the answer's headers named in
	// dispatcher.crm.record_headers (e.g. a CRM's error header).
	Headers map[string]string `json:"headers,omitempty"`
	// Uncertain marks a create whose outcome is unknown: the CRM may have
	// created the record without the answer reaching Sluice (timeout,
	// connection cut, 5xx, 409, or a redelivery after a crash). Note
	// says how it was resolved (found and adopted, or created again).
	Uncertain bool `json:"uncertain,omitempty"`
}

// ID identifies the record: a retried publish of the same record has the
// same ID (readers keep the first), while a second delivery of the same
// event (a redelivery after a crash) is a record of its own. Records carry
// no Nats-Msg-Id: the stream's duplicate window would hold one entry per
// record for topology.duplicate_window (memory at every event rate).
func (r *Record) ID() string {
	id := "ledger:" + string(r.Step) + ":" + string(r.Stage) + ":" + r.EventID + ":" + strconv.FormatUint(r.Seq, 10)
	switch r.Step {
	case StepDelivered:
		id += ":" + strconv.FormatUint(r.Deliveries, 10)
	case StepAttempt: // several per delivery
		id += ":" + strconv.FormatUint(r.Deliveries, 10) + ":" + strconv.FormatInt(r.At.UnixNano(), 10)
	}
	return id
}

// Stored is a record as read back, with its place in the ledger stream.
type Stored struct {
	Record
	// LedgerSeq orders records: a key's deliveries happen one after the
	// other, each record written before the ack that lets the next one go.
	LedgerSeq uint64    `json:"ledger_seq"`
	StoredAt  time.Time `json:"stored_at"`
}
