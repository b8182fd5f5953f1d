package envelope

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// DuplicateName reports the path ("data.customer.email", "items[2].id")
// of the first object member whose name appears twice in the same object
// of the JSON document b, at any depth. encoding/json keeps the last
// one, other decoders (a CRM's, a jq filter's) may keep the first, so an
// event could mean one thing here and another there. b must be valid JSON
// (Decode checks that first); on a syntax error it reports nothing.
//
// Names compare as encoding/json decodes them (escapes resolved, invalid
// UTF-8 replaced). It scans b in place without building tokens: it runs
// on every event the enricher and ingest decode, and json.Decoder.Token
// allocated for every token (issue 14).
func DuplicateName(b []byte) (path string, dup bool) {
	s := dupScanner{b: b}
	s.value()
	if !s.dup {
		return "", false
	}
	return s.pathOf(), true
}

// dupScanner walks one JSON document. at is the path of the value being
// read: object member names and array indexes (idx >= 0).
type dupScanner struct {
	b   []byte
	i   int
	at  []pathPart
	dup bool // found; the scan stops
	bad bool // a syntax error; the scan stops
}

type pathPart struct {
	name []byte
	idx  int // -1: name
}

// pathOf spells s.at as the old decoder-based scan did.
func (s *dupScanner) pathOf() string {
	var b []byte
	for _, p := range s.at {
		if p.idx >= 0 {
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(p.idx), 10)
			b = append(b, ']')
			continue
		}
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, p.name...)
	}
	return string(b)
}

func (s *dupScanner) stop() bool { return s.dup || s.bad }

func (s *dupScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads one value.
func (s *dupScanner) value() {
	s.ws()
	if s.i >= len(s.b) {
		s.bad = true
		return
	}
	switch s.b[s.i] {
	case '{':
		s.object()
	case '[':
		s.array()
	case '"':
		s.str()
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// str skips a string starting at s.i and returns its raw contents
// (without the quotes) and whether it must be decoded to compare (escapes
// or bytes outside ASCII that may be invalid UTF-8).
func (s *dupScanner) str() (raw []byte, decode bool) {
	start := s.i + 1
	high := false
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '\\':
			decode = true
			j++
		case c == '"':
			s.i = j + 1
			raw = s.b[start:j]
			if high && !decode && !utf8.Valid(raw) {
				decode = true
			}
			return raw, decode
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	s.bad = true
	return nil, false
}

// smallObject is how many names an object may have before they go into
// a map instead of a slice scanned linearly.
const smallObject = 16

func (s *dupScanner) object() {
	s.i++ // '{'
	var names [smallObject][]byte
	small := names[:0]
	var big map[string]struct{}
	for first := true; ; first = false {
		s.ws()
		if s.i >= len(s.b) {
			s.bad = true
			return
		}
		if s.b[s.i] == '}' && first {
			s.i++
			return
		}
		if s.b[s.i] != '"' {
			s.bad = true
			return
		}
		raw, decode := s.str()
		if s.bad {
			return
		}
		name := raw
		if decode {
			var n string
			// The quotes around raw are still in s.b.
			if err := json.Unmarshal(s.b[s.i-len(raw)-2:s.i], &n); err != nil {
				s.bad = true
				return
			}
			name = []byte(n)
		}
		seen := false
		if big != nil {
			_, seen = big[string(name)]
			big[string(name)] = struct{}{}
		} else {
			for _, n := range small {
				if bytes.Equal(n, name) {
					seen = true
					break
				}
			}
			if len(small) < smallObject {
				small = append(small, name)
			} else {
				big = make(map[string]struct{}, 2*smallObject)
				for _, n := range small {
					big[string(n)] = struct{}{}
				}
				big[string(name)] = struct{}{}
			}
		}
		s.at = append(s.at, pathPart{name: name, idx: -1})
		if seen {
			s.dup = true
			return
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			s.bad = true
			return
		}
		s.i++
		s.value()
		if s.stop() {
			return
		}
		s.at = s.at[:len(s.at)-1]
		s.ws()
		if s.i >= len(s.b) {
			s.bad = true
			return
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.bad = true
			return
		}
	}
}

func (s *dupScanner) array() {
	s.i++ // '['
	for idx := 0; ; idx++ {
		s.ws()
		if s.i >= len(s.b) {
			s.bad = true
			return
		}
		if s.b[s.i] == ']' && idx == 0 {
			s.i++
			return
		}
		s.at = append(s.at, pathPart{idx: idx})
		s.value()
		if s.stop() {
			return
		}
		s.at = s.at[:len(s.at)-1]
		s.ws()
		if s.i >= len(s.b) {
			s.bad = true
			return
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return
		default:
			s.bad = true
			return
		}
	}
}
