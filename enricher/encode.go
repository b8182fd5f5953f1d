package enricher

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"sluice.dev/mesh/crmreq"
)

// encodeRequest is json.Marshal(r), byte for byte. The common request —
// strings that need no escaping, a compact body without characters
// encoding/json escapes, no crm.find — is written without reflection
// (issue 14: json.Marshal was ~6 µs per event of the enricher lane);
// anything else goes through json.Marshal (TestEncodeRequestMatchesJSONMarshal).
func encodeRequest(r *crmreq.Request) ([]byte, error) {
	n := 300 + len(r.Body) + len(r.EventID) + len(r.Type) + len(r.Key) + len(r.Object) + len(r.IDKey) + len(r.Mode) +
		len(r.Method) + len(r.Path) + len(r.UpdateMethod) + len(r.UpdatePath) + len(r.IDFrom) + len(r.ConflictIDFrom)
	if b, ok := appendRequest(make([]byte, 0, n), r); ok {
		return b, nil
	}
	return json.Marshal(r)
}

// appendRequest appends r as json.Marshal writes it; ok false when it
// cannot tell (then b is garbage).
func appendRequest(b []byte, r *crmreq.Request) (_ []byte, ok bool) {
	if r.Find != nil {
		return b, false
	}
	str := func(name, s string, omitEmpty bool) {
		if !ok || omitEmpty && s == "" {
			return
		}
		if !plainString(s) {
			ok = false
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, `":"`...)
		b = append(b, s...)
		b = append(b, '"')
	}
	if !plainString(r.EventID) {
		return b, false
	}
	b = append(b, `{"event_id":"`...)
	b = append(b, r.EventID...)
	b = append(b, '"')
	ok = true
	str("type", r.Type, false)
	str("key", r.Key, false)
	var err error
	b = append(b, `,"occurred_at":"`...)
	if b, err = r.OccurredAt.AppendText(b); err != nil {
		return b, false
	}
	b = append(b, `","accepted_at":"`...)
	if b, err = r.AcceptedAt.AppendText(b); err != nil {
		return b, false
	}
	b = append(b, '"')
	str("object", r.Object, true)
	str("id_key", r.IDKey, true)
	str("mode", r.Mode, false)
	str("method", r.Method, false)
	str("path", r.Path, true)
	str("update_method", r.UpdateMethod, true)
	str("update_path", r.UpdatePath, true)
	str("id_from", r.IDFrom, true)
	if !ok {
		return b, false
	}
	b = append(b, `,"body":`...)
	switch {
	case len(r.Body) == 0:
		b = append(b, "null"...)
	case plainBody(r.Body):
		b = append(b, r.Body...)
	default:
		return b, false
	}
	str("conflict_id_from", r.ConflictIDFrom, true)
	if !ok {
		return b, false
	}
	return append(b, '}'), true
}

// plainString reports whether encoding/json writes s as it is between
// quotes: no quote, backslash, control character or <, >, & (escaped as
// HTML-safe), valid UTF-8 without U+2028 and U+2029.
func plainString(s string) bool {
	high := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < ' ' || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&':
			return false
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	return !high || utf8.ValidString(s) && !containsLineSep(s)
}

func containsLineSep(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == 0xe2 && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
			return true
		}
	}
	return false
}

// plainBody reports whether encoding/json writes the raw body as it is:
// valid JSON, compact (no whitespace outside strings), nothing it escapes
// (<, >, &, U+2028, U+2029).
func plainBody(body []byte) bool {
	if bytes.ContainsAny(body, "<>&") || bytes.Contains(body, []byte("\u2028")) || bytes.Contains(body, []byte("\u2029")) {
		return false
	}
	in := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return json.Valid(body)
}
