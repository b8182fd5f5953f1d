package ledger

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON appends r as encoding/json would marshal it (same fields,
// same omissions, the same output for every value the writers produce),
// without reflection: records are written for every event, and
// encoding/json was the largest share of a write's cost.
func (r *Record) appendJSON(b []byte) []byte {
	b = append(b, `{"step":`...)
	b = appendString(b, string(r.Step))
	b = append(b, `,"event_id":`...)
	b = appendString(b, r.EventID)
	b = append(b, `,"stage":`...)
	b = appendString(b, string(r.Stage))
	b = append(b, `,"at":`...)
	b = appendTime(b, r.At)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	if r.Deliveries != 0 {
		b = append(b, `,"deliveries":`...)
		b = strconv.AppendUint(b, r.Deliveries, 10)
	}
	if r.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(r.Attempts), 10)
	}
	if r.InHand != 0 {
		b = append(b, `,"in_hand":`...)
		b = strconv.AppendInt(b, int64(r.InHand), 10)
	}
	if !r.AcceptedAt.IsZero() {
		b = append(b, `,"accepted_at":`...)
		b = appendTime(b, r.AcceptedAt)
	}
	if !r.EnrichedAt.IsZero() {
		b = append(b, `,"enriched_at":`...)
		b = appendTime(b, r.EnrichedAt)
	}
	if r.Inline {
		b = append(b, `,"inline":true`...)
	}
	b = appendField(b, "replay", r.Replay)
	b = appendField(b, "out", r.Out)
	if len(r.Body) > 0 {
		b = append(b, `,"body":`...)
		b = appendRaw(b, r.Body)
	}
	if c := r.CRM; c != nil {
		b = append(b, `,"crm":{`...)
		n := len(b)
		b = appendField(b, "method", c.Method)
		b = appendField(b, "path", c.Path)
		b = appendInt(b, "status", int64(c.Status))
		b = appendInt(b, "took_ns", int64(c.Took))
		b = appendInt(b, "latency_ns", int64(c.Latency))
		b = appendField(b, "crm_id", c.CRMID)
		b = appendField(b, "note", c.Note)
		b = appendField(b, "kind", c.Kind)
		b = appendField(b, "error", c.Error)
		b = appendField(b, "response", c.Response)
		if len(c.Headers) > 0 {
			out, _ := json.Marshal(c.Headers) // rare: only with record_headers
			b = append(b, `,"headers":`...)
			b = append(b, out...)
		}
		if c.Uncertain {
			b = append(b, `,"uncertain":true`...)
		}
		if len(b) > n { // drop the first field's comma
			copy(b[n:], b[n+1:])
			b = b[:len(b)-1]
		}
		b = append(b, '}')
	}
	b = appendField(b, "reason", r.Reason)
	b = appendField(b, "error", r.Error)
	return append(b, '}')
}

// appendField appends ,"name":"s" unless s is empty (omitempty).
func appendField(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, s)
}

// appendInt appends ,"name":n unless n is 0 (omitempty).
func appendInt(b []byte, name string, n int64) []byte {
	if n == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, n, 10)
}

func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		out, _ := json.Marshal(t) // an error for such a year; writers never have one
		return append(b, out...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendString appends s as a JSON string. Plain printable ASCII (what
// ids, types, subjects and reasons mostly are) is copied; anything else
// goes through encoding/json, so escaping is exactly its own.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			out, _ := json.Marshal(s)
			return append(b, out...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendRaw appends a JSON document compacted, as encoding/json does with
// a json.RawMessage; an invalid one becomes a JSON string saying so.
func appendRaw(b []byte, raw json.RawMessage) []byte {
	out, err := json.Marshal(raw)
	if err != nil {
		return appendString(b, "[not JSON: not kept]")
	}
	return append(b, out...)
}
