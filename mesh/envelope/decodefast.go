package envelope

import "sluice.dev/mesh/jsonscan"

// decodeFast reads an envelope in the plain form producers and json.Marshal
// write — exact lowercase field names, each once, strings without escapes,
// a data value — without reflection (issue 14: the json.Decoder was most
// of what remained of Decode's cost, on every event the enricher and
// ingest read). ok is false for anything else (an escape or a null in a
// field, a name in other case, an unknown or repeated field, trailing
// data, invalid JSON): Decode then runs encoding/json, which decides and
// explains. For every input it accepts it gives what encoding/json gives
// (TestDecodeFastMatchesEncodingJSON).
func decodeFast(b []byte) (e Envelope, _ bool) {
	p := jsonscan.Scanner{B: b}
	var seen uint8
	ok := p.Object(func(name string) bool {
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
			return false
		}
		if seen&f != 0 {
			return false
		}
		seen |= f
		switch f {
		case 16:
			return p.Time(&e.OccurredAt)
		case 32:
			data, ok := p.RawValue()
			e.Data = data
			return ok
		}
		s, ok := p.Str()
		*dst = s
		return ok
	})
	return e, ok
}
