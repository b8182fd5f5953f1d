package ingest

import (
	"bytes"
	"encoding/json"
	"errors"

	"sluice.dev/mesh/envelope"
)

// maxReportedErrors caps the problems listed in one reply, so a bad batch
// of a thousand lines gets a readable answer.
const maxReportedErrors = 100

// item is one event of a request, in request order.
type item struct {
	index int // position among the request's events, from 0
	line  int // 1-based NDJSON line; 0 for a single-envelope request
	env   *envelope.Envelope
}

// EventError is one problem with one event of a request.
type EventError struct {
	// Index is the event's position in the request (0 for a single event;
	// the n-th non-blank line, from 0, in a batch).
	Index int `json:"index"`
	// Line is the 1-based NDJSON line (batches only).
	Line int `json:"line,omitempty"`
	// ID is the event's id, when it could be read.
	ID string `json:"id,omitempty"`
	// Field names the offending field ("data.email", "key", "type"…); empty
	// when the event is not readable JSON at all.
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// decodeSingle decodes a body holding one envelope.
func decodeSingle(body []byte) (item, []EventError) {
	e, err := envelope.Decode(body)
	if err != nil {
		return item{}, fieldErrors(err, EventError{})
	}
	return item{env: e}, nil
}

// isArray reports whether a body is a JSON array (its first non-blank byte
// is '['): application/json carrying several events.
func isArray(body []byte) bool {
	b := bytes.TrimSpace(body)
	return len(b) > 0 && b[0] == '['
}

// decodeArray decodes a JSON array of envelopes, a batch like NDJSON (Line
// stays 0; Index is the position in the array). It returns ErrTooLarge as
// soon as the array holds more than maxEvents events.
func decodeArray(body []byte, maxEvents int) ([]item, []EventError, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, []EventError{{Reason: "not a JSON array of event objects: send one event object, " +
			"a JSON array of them, or NDJSON (application/x-ndjson, one event per line)"}}, nil
	}
	if len(raws) > maxEvents {
		return nil, nil, ErrTooLarge
	}
	if len(raws) == 0 {
		return nil, []EventError{{Reason: "empty batch: no events"}}, nil
	}
	var items []item
	var errs []EventError
	for i, raw := range raws {
		e, err := envelope.Decode(raw)
		if err != nil {
			if len(errs) < maxReportedErrors {
				errs = append(errs, fieldErrors(err, EventError{Index: i})...)
			}
			continue
		}
		items = append(items, item{index: i, env: e})
	}
	return items, errs, nil
}

// decodeBatch decodes an NDJSON body: one envelope per line, blank lines
// (whitespace only) ignored, "\r\n" accepted. It returns the decoded events
// in order, every line's decode problems (capped at maxReportedErrors), or
// ErrTooLarge as soon as the body holds more than maxEvents events.
func decodeBatch(body []byte, maxEvents int) ([]item, []EventError, error) {
	var items []item
	var errs []EventError
	index := 0
	for lineNo := 1; len(body) > 0; lineNo++ {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if index >= maxEvents {
			return nil, nil, ErrTooLarge
		}
		e, err := envelope.Decode(line)
		if err != nil {
			if len(errs) < maxReportedErrors {
				errs = append(errs, fieldErrors(err, EventError{Index: index, Line: lineNo})...)
			}
		} else {
			items = append(items, item{index: index, line: lineNo, env: e})
		}
		index++
	}
	if index == 0 {
		errs = append(errs, EventError{Reason: "empty batch: no events"})
	}
	return items, errs, nil
}

// fieldErrors turns a decode or Prepare error into reply entries based on
// proto (index, line, id).
func fieldErrors(err error, proto EventError) []EventError {
	var inv *envelope.Invalid
	if !errors.As(err, &inv) || len(inv.Fields) == 0 {
		proto.Reason = err.Error()
		return []EventError{proto}
	}
	out := make([]EventError, 0, len(inv.Fields))
	for _, f := range inv.Fields {
		e := proto
		e.Field, e.Reason = f.Field, f.Reason
		out = append(out, e)
	}
	return out
}
