package inbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/itchyny/gojq"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"sluice.dev/mesh/topology"
)

// Envelope maps a source's request body to webhook items (the YAML of
// inbound.sources[].envelope). Every expression is jq; the item
// expressions run on each item with the variables $headers (request
// headers, lower-case names, first value), $delivery (the delivery id of
// the signature scheme, or ""), $source (the source name) and $index (the
// item's position). Nil envelope: today's shape, {type, id, …} objects or
// an array of them.
type Envelope struct {
	// Items gives the items of the body: ".", ".[]", ".events[]", …
	// Default: the body's elements if it is an array, else the body.
	Items string `yaml:"items"`
	// Type gives the item's type name. Default ".type"; a constant is a jq
	// string, e.g. '"contact_updated"'.
	Type string `yaml:"type"`
	// ID gives the dedupe id. Default (envelope set): the delivery id and
	// the item index ("<delivery>#<i>"), or, when the CRM sends no delivery id, a hash of the
	// source and the item's content. Never use a record id alone: a later
	// update of the record would be dropped as a duplicate.
	ID string `yaml:"id"`
	// Key gives the entity key; empty: the type's key.
	Key string `yaml:"key"`
	// Version gives the item's version (number or RFC 3339 time); empty:
	// the type's version.
	Version string `yaml:"version"`
	// OccurredAt gives when the change happened (carried in
	// Sluice-Inbound-Occurred-At); optional.
	OccurredAt string `yaml:"occurred_at"`
}

// defaultItems is the items expression of every envelope without one.
const defaultItems = `if type == "array" then .[] else . end`

// Item is one webhook item of a request body, as the receiver stores it.
type Item struct {
	// Index is the item's position in the body.
	Index int
	// ID is the dedupe id (with the source name the Nats-Msg-Id).
	ID string
	// Type is the item's type name ("" when it has none).
	Type string
	// Key, Version and OccurredAt come from the envelope ("" when not
	// mapped there).
	Key, Version, OccurredAt string
	// Raw is the item as JSON: the CRM's bytes for the default envelope on
	// an object body, else the item re-encoded; the whole body when it
	// could not be split.
	Raw json.RawMessage
	// Problems say why the item cannot be routed; such an item is stored
	// under _unreadable and parked by the writer with them.
	Problems []FieldError
	// Whole is true when Raw is the whole request body (a replay of the
	// item splits it again).
	Whole bool
}

// compiledEnvelope is an Envelope with its expressions compiled.
type compiledEnvelope struct {
	legacy                                   bool // nil envelope: id defaults to .id
	items, typ, id, key, version, occurredAt *gojq.Code
}

var envVars = []string{"$headers", "$delivery", "$source", "$index"}

func compileEnvelope(e *Envelope) (*compiledEnvelope, error) {
	ce := &compiledEnvelope{}
	if e == nil {
		ce.legacy = true
		e = &Envelope{ID: ".id"}
	}
	var errs []error
	c := func(field, expr, def string) *gojq.Code {
		if expr == "" {
			expr = def
		}
		if expr == "" {
			return nil
		}
		q, err := gojq.Parse(expr)
		if err == nil {
			var code *gojq.Code
			if code, err = gojq.Compile(q, gojq.WithVariables(envVars)); err == nil {
				return code
			}
		}
		errs = append(errs, fmt.Errorf("envelope.%s: %w", field, err))
		return nil
	}
	ce.items = c("items", e.Items, defaultItems)
	ce.typ = c("type", e.Type, ".type")
	ce.id = c("id", e.ID, "")
	ce.key = c("key", e.Key, "")
	ce.version = c("version", e.Version, "")
	ce.occurredAt = c("occurred_at", e.OccurredAt, "")
	return ce, errors.Join(errs...)
}

// Split maps a verified body to items. It never fails for the body's
// shape: a body that cannot be split is one item with Problems and the
// whole body as Raw. It returns errTooMany past maxItems (413).
func (ce *compiledEnvelope) Split(body []byte, h http.Header, delivery, source string, maxItems int) ([]Item, error) {
	return ce.SplitContext(context.Background(), body, h, delivery, source, maxItems)
}

// SplitContext is Split with every envelope expression bounded by ctx: an
// expression cut off makes the item unreadable (stored, then parked).
func (ce *compiledEnvelope) SplitContext(ctx context.Context, body []byte, h http.Header, delivery, source string, maxItems int) ([]Item, error) {
	whole := func(reason string) []Item {
		raw := json.RawMessage(body)
		return []Item{{ID: hashID(source, body), Raw: raw, Problems: []FieldError{{"body", reason}}, Whole: true}}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return whole("empty body"), nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(trimmed))
	if err != nil {
		return whole("not valid JSON"), nil
	}
	hdrs := map[string]any{}
	for k, v := range h {
		if len(v) > 0 {
			hdrs[strings.ToLower(k)] = v[0]
		}
	}
	vars := func(i int) []any { return []any{hdrs, delivery, source, i} }
	var vals []any
	it := ce.items.RunWithContext(ctx, doc, vars(0)...)
	for {
		v, ok := it.Next()
		if !ok {
			break
		}
		if err, isErr := v.(error); isErr {
			return whole("envelope.items: " + truncate(err.Error())), nil
		}
		if len(vals) == maxItems {
			return nil, fmt.Errorf("%w: more than %d items", errTooMany, maxItems)
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return whole("envelope.items gave no item"), nil
	}
	single := len(vals) == 1 && trimmed[0] == '{'
	items := make([]Item, len(vals))
	for i, v := range vals {
		items[i] = ce.item(ctx, v, i, single, trimmed, vars(i), delivery, source)
	}
	return items, nil
}

func (ce *compiledEnvelope) item(ctx context.Context, v any, i int, single bool, body []byte, vars []any, delivery, source string) Item {
	it := Item{Index: i}
	if single && ce.legacy {
		it.Raw, it.Whole = json.RawMessage(body), true
	} else {
		b, err := json.Marshal(v)
		if err != nil {
			b, _ = json.Marshal(fmt.Sprint(v))
		}
		it.Raw = b
	}
	problem := func(field, reason string) { it.Problems = append(it.Problems, FieldError{field, reason}) }
	if _, ok := v.(map[string]any); !ok && ce.legacy {
		problem("item", "must be a JSON object")
	}
	// Type.
	switch t, err := evalString(ctx, ce.typ, v, vars); {
	case err != nil:
		problem("type", truncate(err.Error()))
	case t == "":
		problem("type", "required")
	case !typeRe.MatchString(t):
		problem("type", "must be 1-64 characters of A-Z a-z 0-9 _ -")
	default:
		it.Type = t
	}
	// Dedupe id.
	id, err := evalString(ctx, ce.id, v, vars)
	switch {
	case err != nil:
		problem("id", truncate(err.Error()))
	case id != "" && !idRe.MatchString(id):
		problem("id", "must be 1-200 printable ASCII characters without spaces")
	case id != "":
		it.ID = id
	case ce.legacy && !single:
		problem("id", "required")
	case delivery != "" && single && ce.legacy && idRe.MatchString(delivery):
		it.ID = delivery
	case delivery != "" && idRe.MatchString(delivery+"#"+strconv.Itoa(i)):
		it.ID = delivery + "#" + strconv.Itoa(i)
	case ce.legacy:
		problem("id", "required (the delivery id is not usable as one)")
	}
	if it.ID == "" {
		it.ID = hashID(source, it.Raw)
	}
	// Key, version, occurred_at (optional).
	if k, err := evalString(ctx, ce.key, v, vars); err != nil {
		problem("key", truncate(err.Error()))
	} else if k != "" {
		if err := topology.CheckKey(k); err != nil {
			problem("key", err.Error())
		} else {
			it.Key = k
		}
	}
	if ver, err := evalScalar(ctx, ce.version, v, vars); err != nil {
		problem("version", truncate(err.Error()))
	} else if len(ver) > 100 {
		problem("version", "longer than 100 characters")
	} else {
		it.Version = ver
	}
	if at, err := evalScalar(ctx, ce.occurredAt, v, vars); err != nil {
		problem("occurred_at", truncate(err.Error()))
	} else if len(at) <= 100 {
		it.OccurredAt = at
	}
	return it
}

// hashIDPrefix starts every content-hash dedupe id.
const hashIDPrefix = "sha256:"

// hashID is the dedupe id of an item without one: the source and the
// item's content.
func hashID(source string, content []byte) string {
	s := sha256.New()
	s.Write([]byte(source))
	s.Write([]byte{0})
	s.Write(content)
	return hashIDPrefix + hex.EncodeToString(s.Sum(nil))
}

// evalString runs code (nil: "") and wants a string or null.
func evalString(ctx context.Context, code *gojq.Code, v any, vars []any) (string, error) {
	if code == nil {
		return "", nil
	}
	out, err := firstOutput(ctx, code, v, vars)
	if err != nil || out == nil {
		return "", err
	}
	s, ok := out.(string)
	if !ok {
		return "", fmt.Errorf("gave %s, want a string", jsonKind(out))
	}
	return s, nil
}

// evalScalar runs code (nil: "") and wants a string, a number or null.
func evalScalar(ctx context.Context, code *gojq.Code, v any, vars []any) (string, error) {
	if code == nil {
		return "", nil
	}
	out, err := firstOutput(ctx, code, v, vars)
	switch x := out.(type) {
	case nil:
		return "", err
	case string:
		return x, err
	case bool, map[string]any, []any:
		return "", fmt.Errorf("gave %s, want a string or a number", jsonKind(out))
	}
	return canonical(out), err
}

func firstOutput(ctx context.Context, code *gojq.Code, v any, vars []any) (any, error) {
	it := code.RunWithContext(ctx, v, vars...)
	out, ok := it.Next()
	if !ok {
		return nil, nil
	}
	if err, isErr := out.(error); isErr {
		return nil, err
	}
	return out, nil
}

// jsonKind names v's JSON type (never its value: problems are logged).
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return "a number"
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
