package inbound

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Item is one webhook of a request body, as the receiver stores it.
type Item struct {
	// ID is the item's "id", or the delivery id of a single-item request
	// without one. With the source name it is the dedupe id.
	ID string
	// Type is the item's "type": a catalog type name.
	Type string
	// Raw is the item exactly as the CRM sent it.
	Raw json.RawMessage
}

// FieldError names one problem of a request or item.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// BadWebhook lists every problem of an unreadable request. It wraps
// ErrBadWebhook.
type BadWebhook struct{ Fields []FieldError }

func (e *BadWebhook) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Reason
	}
	return "unreadable webhook: " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is(err, ErrBadWebhook) match.
func (e *BadWebhook) Unwrap() error { return ErrBadWebhook }

var (
	typeRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	idRe   = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)
)

// DecodeWebhook splits a request body into items: one JSON object, or a
// JSON array of objects (several CRMs batch their webhooks). Each item needs
// a string "type" ([A-Za-z0-9_-], at most 64) and a string "id" (printable
// ASCII without spaces, at most 200); a single object without "id" takes
// deliveryID. maxItems caps a batch. Errors are *BadWebhook.
func DecodeWebhook(body []byte, deliveryID string, maxItems int) ([]Item, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, &BadWebhook{[]FieldError{{"body", "empty"}}}
	}
	if !json.Valid(trimmed) {
		return nil, &BadWebhook{[]FieldError{{"body", "not valid JSON"}}}
	}
	var raws []json.RawMessage
	prefix := func(int) string { return "" }
	switch trimmed[0] {
	case '[':
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, &BadWebhook{[]FieldError{{"body", err.Error()}}}
		}
		if len(raws) == 0 {
			return nil, &BadWebhook{[]FieldError{{"body", "empty batch"}}}
		}
		if len(raws) > maxItems {
			return nil, fmt.Errorf("%w: %d items, at most %d", errTooMany, len(raws), maxItems)
		}
		prefix = func(i int) string { return fmt.Sprintf("[%d].", i) }
		deliveryID = "" // every item of a batch names itself
	case '{':
		raws = []json.RawMessage{trimmed}
	default:
		return nil, &BadWebhook{[]FieldError{{"body", "must be a JSON object or an array of objects"}}}
	}
	items := make([]Item, 0, len(raws))
	var problems []FieldError
	for i, raw := range raws {
		it, fe := decodeItem(raw, deliveryID, prefix(i))
		problems = append(problems, fe...)
		items = append(items, it)
	}
	if len(problems) > 0 {
		return nil, &BadWebhook{problems}
	}
	return items, nil
}

var errTooMany = errors.New("inbound: too many items")

func decodeItem(raw json.RawMessage, deliveryID, at string) (Item, []FieldError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		field := "body"
		if at != "" {
			field = strings.TrimSuffix(at, ".")
		}
		return Item{}, []FieldError{{field, "must be a JSON object"}}
	}
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and "tYpe" must not pass for "type".
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return Item{}, []FieldError{{at + "body", err.Error()}}
	}
	it := Item{Raw: raw}
	var fe []FieldError
	switch id, err := jsonString(h["id"]); {
	case err != nil:
		fe = append(fe, FieldError{at + "id", err.Error()})
	case id == "" && deliveryID == "":
		fe = append(fe, FieldError{at + "id", "required"})
	case id == "" && !idRe.MatchString(deliveryID):
		fe = append(fe, FieldError{at + "id", "required (the delivery id is not usable as one)"})
	case id == "":
		it.ID = deliveryID
	case !idRe.MatchString(id):
		fe = append(fe, FieldError{at + "id", "must be 1-200 printable ASCII characters without spaces"})
	default:
		it.ID = id
	}
	switch typ, err := jsonString(h["type"]); {
	case err != nil:
		fe = append(fe, FieldError{at + "type", err.Error()})
	case typ == "":
		fe = append(fe, FieldError{at + "type", "required"})
	case !typeRe.MatchString(typ):
		fe = append(fe, FieldError{at + "type", "must be 1-64 characters of A-Z a-z 0-9 _ -"})
	default:
		it.Type = typ
	}
	return it, fe
}

// jsonString decodes an optional JSON string; absent or null is "".
func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errors.New("must be a string")
	}
	return s, nil
}
