// Package jsonscan reads the plain JSON Sluice's own writers produce
// (strings without escapes, values passed through as raw bytes) for the
// decoders that skip encoding/json on their hot path: the envelope
// (mesh/envelope) and the CRM request (dispatcher). Every method reports
// false for anything outside that subset, and the caller then decodes with
// encoding/json, so the result never differs from encoding/json's.
package jsonscan

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Scanner reads JSON from B, at offset I.
type Scanner struct {
	B []byte
	I int
}

// Done reports whether the whole input was read.
func (p *Scanner) Done() bool { return p.I == len(p.B) }

// WS skips whitespace.
func (p *Scanner) WS() {
	for p.I < len(p.B) {
		switch p.B[p.I] {
		case ' ', '\t', '\n', '\r':
			p.I++
		default:
			return
		}
	}
}

// Byte consumes c if it is next.
func (p *Scanner) Byte(c byte) bool {
	if p.I < len(p.B) && p.B[p.I] == c {
		p.I++
		return true
	}
	return false
}

// Str reads a string without escapes, of valid UTF-8 (what encoding/json
// would give unchanged).
func (p *Scanner) Str() (string, bool) {
	if !p.Byte('"') {
		return "", false
	}
	start, high := p.I, false
	for ; p.I < len(p.B); p.I++ {
		switch c := p.B[p.I]; {
		case c == '"':
			s := p.B[start:p.I]
			p.I++
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

// Value returns the bytes of the next value (the caller checks its
// syntax), skipping strings and nesting.
func (p *Scanner) Value() ([]byte, bool) {
	start, depth := p.I, 0
	for p.I < len(p.B) {
		switch p.B[p.I] {
		case '"':
			p.I++
			for p.I < len(p.B) && p.B[p.I] != '"' {
				if p.B[p.I] == '\\' {
					p.I++
				}
				p.I++
			}
			if p.I >= len(p.B) {
				return nil, false
			}
			p.I++
		case '{', '[':
			depth++
			p.I++
		case '}', ']', ',', ' ', '\t', '\n', '\r':
			c := p.B[p.I]
			if depth == 0 {
				return p.B[start:p.I], p.I > start
			}
			if c == '}' || c == ']' {
				depth--
			}
			p.I++
		default:
			p.I++
		}
	}
	return p.B[start:p.I], depth == 0 && p.I > start
}

// Object reads an input that is one object and nothing else. For each
// member it reads the name and the colon, then calls member, which reads
// the value (Str, Value, …) and returns false to give up. Duplicate and
// unknown names are member's to refuse.
func (p *Scanner) Object(member func(name string) bool) bool {
	p.WS()
	if !p.Byte('{') {
		return false
	}
	for first := true; ; first = false {
		p.WS()
		if first && p.Byte('}') {
			break
		}
		name, ok := p.Str()
		if !ok {
			return false
		}
		p.WS()
		if !p.Byte(':') {
			return false
		}
		p.WS()
		if !member(name) {
			return false
		}
		p.WS()
		if p.Byte(',') {
			continue
		}
		if !p.Byte('}') {
			return false
		}
		break
	}
	p.WS()
	return p.Done()
}

// Time reads a string into t as encoding/json would (time.Time's
// UnmarshalJSON of the quoted bytes).
func (p *Scanner) Time(t *time.Time) bool {
	start := p.I
	if _, ok := p.Str(); !ok {
		return false
	}
	return t.UnmarshalJSON(p.B[start:p.I]) == nil
}

// RawValue reads a non-null, valid JSON value, copied.
func (p *Scanner) RawValue() (json.RawMessage, bool) {
	v, ok := p.Value()
	if !ok || string(v) == "null" || !json.Valid(v) {
		return nil, false
	}
	return append(json.RawMessage(nil), v...), true
}
