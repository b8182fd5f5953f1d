package crmsim

import (
	"strings"
	"time"
)

// Record is one request the sim answered (control requests are not
// recorded). Records are kept in arrival order of the decision, which for a
// client that waits for each answer is the order it sent them.
type Record struct {
	// Index is the record's position, 0 for the first request since the
	// start or the last Reset (use it as ?since= to page).
	Index int `json:"index"`
	// At is when the request arrived.
	At     time.Time `json:"at"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	// Status is the HTTP status the sim answered.
	Status int `json:"status"`
	// Fault says why an error status was injected: "outage", "error" (the
	// error rate) or "reject"; empty when the request was applied.
	Fault string `json:"fault,omitempty"`
	// CRMID is the record id created, replayed or updated, if any.
	CRMID string `json:"crm_id,omitempty"`
	// Headers the dispatcher sends.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Key            string `json:"key,omitempty"`         // X-Sluice-Key
	EventID        string `json:"event_id,omitempty"`    // X-Sluice-Event-Id
	Type           string `json:"type,omitempty"`        // X-Sluice-Type
	OccurredAt     string `json:"occurred_at,omitempty"` // X-Sluice-Occurred-At
	// BodySize is the number of body bytes read.
	BodySize int64 `json:"body_size"`
}

// ID is the event id the record is about: X-Sluice-Event-Id, or the
// Idempotency-Key when that header is absent.
func (r *Record) ID() string {
	if r.EventID != "" {
		return r.EventID
	}
	return r.IdempotencyKey
}

// OrderKey is the ordering key the record belongs to: X-Sluice-Key, or the
// part of the id before its last '#' when that header is absent.
func (r *Record) OrderKey() string {
	if r.Key != "" {
		return r.Key
	}
	id := r.ID()
	if i := strings.LastIndexByte(id, '#'); i >= 0 {
		return id[:i]
	}
	return id
}

// OK reports whether the status is 2xx.
func (r *Record) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Fault values of Record.Fault.
const (
	FaultOutage = "outage"
	FaultError  = "error"
	FaultReject = "reject"
)

// chunkSize is the number of records per chunk. Chunks never move once
// allocated, so readers can scan records below a snapshot length without
// holding the lock while writers append above it.
const chunkSize = 1 << 14

// recordLog is an append-only chunked record store. Writers hold Sim.mu.
type recordLog struct {
	chunks [][]Record
	n      int
}

func newRecordLog(capacity int) *recordLog {
	nc := (capacity + chunkSize - 1) / chunkSize
	l := &recordLog{chunks: make([][]Record, 0, max(nc, 16))}
	for range nc {
		l.chunks = append(l.chunks, make([]Record, chunkSize))
	}
	return l
}

func (l *recordLog) append(r *Record) {
	ci := l.n / chunkSize
	if ci == len(l.chunks) {
		l.chunks = append(l.chunks, make([]Record, chunkSize))
	}
	r.Index = l.n
	l.chunks[ci][l.n%chunkSize] = *r
	l.n++
}

// snapshot is a read-only view of the first n records.
type snapshot struct {
	chunks [][]Record
	n      int
}

func (l *recordLog) snapshot() snapshot {
	return snapshot{chunks: l.chunks[:len(l.chunks):len(l.chunks)], n: l.n}
}

// at returns record i (i < n); the pointer must not be written through.
func (s snapshot) at(i int) *Record { return &s.chunks[i/chunkSize][i%chunkSize] }

// copyRange copies records [from, to) into dst.
func (s snapshot) copyRange(dst []Record, from, to int) []Record {
	for from < to {
		c := s.chunks[from/chunkSize]
		off := from % chunkSize
		end := min(chunkSize, off+(to-from))
		dst = append(dst, c[off:end]...)
		from += end - off
	}
	return dst
}
