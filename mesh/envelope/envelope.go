// Package envelope defines the event envelope producers send and its
// structural checks (the type's JSON Schema is checked by the catalog).
package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"
	"unicode"
	"unicode/utf8"

	"sluice.dev/mesh/topology"
)

// Envelope is one event as producers send it.
type Envelope struct {
	// ID is unique per event: JetStream dedupe (Nats-Msg-Id) and the CRM's
	// Idempotency-Key. 1-128 printable ASCII characters, no spaces.
	ID string `json:"id"`
	// Type selects the JSON Schema and the mapping: [A-Za-z0-9_-], 1-64.
	Type string `json:"type"`
	// Key is the ordering key (the entity). Events of one key reach the CRM
	// in the order they were accepted. May be derived from Data by the type.
	Key string `json:"key,omitempty"`
	// Source names the producer (free text, optional): at most
	// MaxSourceLen bytes of UTF-8 without control characters.
	Source string `json:"source,omitempty"`
	// OccurredAt is when the event happened (RFC 3339).
	OccurredAt time.Time `json:"occurred_at"`
	// Data is the event's payload: a JSON object.
	Data json.RawMessage `json:"data"`
}

// FieldError says which field of an event is wrong and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Reason }

// ErrInvalid is wrapped by every decode or check error; the caller rejects
// the event (HTTP 400, or park in a lane) and never stores it.
var ErrInvalid = errors.New("invalid event")

// Invalid is the error returned for an invalid envelope: every field problem.
type Invalid struct{ Fields []FieldError }

func (e *Invalid) Error() string {
	s := "invalid event:"
	for i, f := range e.Fields {
		if i > 0 {
			s += ";"
		}
		s += " " + f.Error()
	}
	return s
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *Invalid) Unwrap() error { return ErrInvalid }

// MaxSourceLen is the longest source accepted, in bytes.
const MaxSourceLen = 128

// ValidID reports whether id is an acceptable event id: 1-128 printable
// ASCII characters without spaces (it travels as Nats-Msg-Id and as the
// CRM's Idempotency-Key header). A loop, not a regexp: it runs for every
// event (issue 14).
func ValidID(id string) bool {
	if len(id) < 1 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// ValidType reports whether t is an acceptable type name: one subject token
// of 1-64 characters of A-Z a-z 0-9 _ -.
func ValidType(t string) bool {
	if len(t) < 1 || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Decode parses one envelope strictly: unknown top-level fields, trailing
// data, wrong JSON types and a name twice in one object (at any depth,
// data included: JSON decoders disagree on which one wins) are errors. It
// does not check required fields; call Check for that (after deriving the
// key, if the type does).
func Decode(b []byte) (*Envelope, error) {
	e, ok := decodeFast(b)
	if !ok {
		var err error
		if e, err = decodeStd(b); err != nil {
			return nil, err
		}
	}
	if path, dup := DuplicateName(b); dup {
		return nil, &Invalid{Fields: []FieldError{{Field: path, Reason: "duplicate name: the object has this member more than once"}}}
	}
	if e.Key == "" && emptyKeySent(b) {
		return nil, &Invalid{Fields: []FieldError{{Field: "key", Reason: "empty: send the entity's key, or leave the field out for the type to derive it"}}}
	}
	return &e, nil
}

// decodeStd is Decode's decoding with encoding/json, for what decodeFast
// leaves to it.
func decodeStd(b []byte) (Envelope, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Envelope
	if err := dec.Decode(&e); err != nil {
		return e, &Invalid{Fields: []FieldError{decodeField(err)}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return e, &Invalid{Fields: []FieldError{{Field: "", Reason: "trailing data after the JSON object"}}}
	}
	return e, nil
}

// emptyKeySent reports whether b (a decoded envelope whose Key is empty)
// spells "key": "" rather than leaving the field out: an empty key is
// refused, not silently replaced by the derived one.
func emptyKeySent(b []byte) bool {
	// Cheap pre-check (most events carry no key field at all); field names
	// match case-insensitively and may be written with \u escapes.
	if !bytes.Contains(bytes.ToLower(b), []byte(`"key"`)) && !bytes.Contains(b, []byte(`\u`)) {
		return false
	}
	var k struct {
		Key *string `json:"key"`
	}
	return json.Unmarshal(b, &k) == nil && k.Key != nil
}

// jsonKind names a Go kind the way a JSON producer knows it.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	}
	return "value of another kind"
}

func decodeField(err error) FieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return FieldError{Field: "", Reason: "an event must be a JSON object (several events: a JSON array or NDJSON, one per line)"}
		}
		return FieldError{Field: te.Field, Reason: "must be a JSON " + jsonKind(te.Type.Kind())}
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return FieldError{Field: "occurred_at", Reason: "must be an RFC 3339 timestamp"}
	}
	msg := err.Error()
	const unknown = "json: unknown field "
	if len(msg) > len(unknown) && msg[:len(unknown)] == unknown {
		return FieldError{Field: msg[len(unknown)+1 : len(msg)-1], Reason: "unknown field"}
	}
	return FieldError{Field: "", Reason: "not a JSON object: " + msg}
}

// Check reports every missing or malformed field.
func (e *Envelope) Check() error {
	var fs []FieldError
	if e.ID == "" {
		fs = append(fs, FieldError{"id", "required"})
	} else if !ValidID(e.ID) {
		fs = append(fs, FieldError{"id", "must be 1-128 printable ASCII characters without spaces"})
	}
	if e.Type == "" {
		fs = append(fs, FieldError{"type", "required"})
	} else if !ValidType(e.Type) {
		fs = append(fs, FieldError{"type", "must be 1-64 characters of A-Z a-z 0-9 _ -"})
	}
	if e.Key == "" {
		fs = append(fs, FieldError{"key", "required (or derived from data by the type's key expression)"})
	} else if err := topology.CheckKey(e.Key); err != nil {
		fs = append(fs, FieldError{"key", err.Error()})
	}
	if len(e.Source) > MaxSourceLen {
		fs = append(fs, FieldError{"source", fmt.Sprintf("longer than %d bytes", MaxSourceLen)})
	} else if !printable(e.Source) {
		fs = append(fs, FieldError{"source", "must be UTF-8 without control characters"})
	}
	if e.OccurredAt.IsZero() {
		fs = append(fs, FieldError{"occurred_at", "required"})
	}
	d := bytes.TrimSpace(e.Data)
	if len(d) == 0 || string(d) == "null" {
		fs = append(fs, FieldError{"data", "required"})
	} else if d[0] != '{' {
		fs = append(fs, FieldError{"data", "must be a JSON object"})
	}
	if len(fs) > 0 {
		return &Invalid{Fields: fs}
	}
	return nil
}

// Marshal encodes e compactly.
func (e *Envelope) Marshal() ([]byte, error) { return json.Marshal(e) }

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
