package envelope

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// DuplicateName reports the path ("data.customer.email", "items[2].id")
// of the first object member whose name appears twice in the same object
// of the JSON document b, at any depth. encoding/json keeps the last
// one, other decoders (a CRM's, a jq filter's) may keep the first, so an
// event could mean one thing here and another there. b must be valid JSON
// (Decode checks that first); on a syntax error it reports nothing.
func DuplicateName(b []byte) (path string, dup bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	path, dup, _ = dupValue(dec, "")
	return path, dup
}

// dupValue reads one value from dec; at is its path.
func dupValue(dec *json.Decoder, at string) (string, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]struct{}{}
		for dec.More() {
			nt, err := dec.Token()
			if err != nil {
				return "", false, err
			}
			name, _ := nt.(string)
			p := name
			if at != "" {
				p = at + "." + name
			}
			if _, ok := seen[name]; ok {
				return p, true, nil
			}
			seen[name] = struct{}{}
			if p, dup, err := dupValue(dec, p); dup || err != nil {
				return p, dup, err
			}
		}
		_, err = dec.Token() // '}'
		return "", false, err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if p, dup, err := dupValue(dec, at+"["+strconv.Itoa(i)+"]"); dup || err != nil {
				return p, dup, err
			}
		}
		_, err = dec.Token() // ']'
		return "", false, err
	}
	return "", false, nil
}
