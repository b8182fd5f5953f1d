package envelope

import (
	"encoding/json"
	"unicode/utf8"
)

// decodeFast reads an envelope in the plain form producers and json.Marshal
// write — exact lowercase field names, each once, strings without escapes,
// a data value — without reflection (issue 14: the json.Decoder was most
// of what remained of Decode's cost, on every event the enricher and
// ingest read). ok is false for anything else (an escape or a null in a
// field, a name in other case, an unknown or repeated field, trailing
// data, invalid JSON): Decode then runs encoding/json, which decides and
// explains. For every input it accepts it gives what encoding/json gives
// (TestDecodeFastMatchesEncodingJSON).
func decodeFast(b []byte) (e Envelope, ok bool) {
	p := scanner{b: b}
	p.ws()
	if !p.byte('{') {
		return e, false
	}
	var seen uint8
	for first := true; ; first = false {
		p.ws()
		if first && p.byte('}') {
			break
		}
		name, ok := p.str()
		if !ok {
			return e, false
		}
		p.ws()
		if !p.byte(':') {
			return e, false
		}
		p.ws()
		var f uint8
		var dst *string
		switch name {
		case "id":
			f, dst = 1, &e.ID
		case "type":
			f, dst = 2, &e.Type
		case "key":
			f, dst = 4, &e.Key
		case "source":
			f, dst = 8, &e.Source
		case "occurred_at":
			f = 16
		case "data":
			f = 32
		default:
			return e, false
		}
		if seen&f != 0 {
			return e, false
		}
		seen |= f
		switch f {
		case 16:
			start := p.i
			if _, ok := p.str(); !ok || e.OccurredAt.UnmarshalJSON(p.b[start:p.i]) != nil {
				return e, false
			}
		case 32:
			v, ok := p.value()
			if !ok || string(v) == "null" || !json.Valid(v) {
				return e, false
			}
			e.Data = append(json.RawMessage(nil), v...)
		default:
			s, ok := p.str()
			if !ok {
				return e, false
			}
			*dst = s
		}
		p.ws()
		if p.byte(',') {
			continue
		}
		if !p.byte('}') {
			return e, false
		}
		break
	}
	p.ws()
	return e, p.i == len(p.b)
}

// scanner reads the plain JSON decodeFast accepts.
type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes, of valid UTF-8 (what encoding/json
// would give unchanged).
func (p *scanner) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start, high := p.i, false
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if high && !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\' || c < ' ':
			return "", false
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	return "", false
}

// value returns the bytes of the next value (the caller checks its
// syntax), skipping strings and nesting.
func (p *scanner) value() ([]byte, bool) {
	start, depth := p.i, 0
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			p.i++
			for p.i < len(p.b) && p.b[p.i] != '"' {
				if p.b[p.i] == '\\' {
					p.i++
				}
				p.i++
			}
			if p.i >= len(p.b) {
				return nil, false
			}
			p.i++
		case '{', '[':
			depth++
			p.i++
		case '}', ']', ',', ' ', '\t', '\n', '\r':
			c := p.b[p.i]
			if depth == 0 {
				return p.b[start:p.i], p.i > start
			}
			if c == '}' || c == ']' {
				depth--
			}
			p.i++
		default:
			p.i++
		}
	}
	return p.b[start:p.i], depth == 0 && p.i > start
}
