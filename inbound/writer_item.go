package inbound

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"sluice.dev/mesh/lane"
)

// parkItem parks an item that cannot be applied, honouring its type's
// on_invalid: skip parks it alone (the entity's later items go on),
// isolate parks the entity's later items behind it.
func (s *Service) parkItem(t *compiledType, reason string, err error, fields []FieldError) lane.Outcome {
	o := s.park(reason, err, fields)
	if t != nil && t.def.OnInvalid == OnInvalidSkip {
		o.KeyOpen = true
	}
	return o
}

// parkUnreadable parks an item the receiver could not route (no type, no
// usable id, a body that is not JSON…) with the receiver's problems; the
// message body is the item, or the whole request body.
func (s *Service) parkUnreadable(m *lane.Msg) lane.Outcome {
	var fields []FieldError
	if err := json.Unmarshal([]byte(m.Header.Get(HeaderProblems)), &fields); err != nil || len(fields) == 0 {
		fields = []FieldError{{"item", "unreadable"}}
	}
	return s.parkUnreadableItem(fields)
}

// parkUnreadableItem parks with the problems in the parked message's
// header only (they may quote the item); the error, which the lane runner
// logs, names the fields.
func (s *Service) parkUnreadableItem(fields []FieldError) lane.Outcome {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Field
	}
	return s.park("unreadable webhook", fmt.Errorf("%w: %s", ErrUnreadable, strings.Join(names, ", ")), fields)
}

// column evaluates a column's expression. With write.skip_absent, present
// is false when the expression gives no output, or when it is a path whose
// last member the item does not have (an explicit null is present).
func (t *compiledType) column(ctx context.Context, c string, doc any) (v any, present bool, err error) {
	out, ok := t.colCode[c].First(ctx, doc, 0)
	if !ok {
		return nil, !t.def.Write.SkipAbsent, nil
	}
	if e, isErr := out.(error); isErr {
		return nil, false, e
	}
	if !t.def.Write.SkipAbsent || out != nil {
		return out, true, nil
	}
	pc := t.colPath[c]
	if pc == nil {
		return nil, true, nil
	}
	p, ok := pc.First(ctx, doc, 0)
	path, isPath := p.([]any)
	if !ok || !isPath {
		return nil, true, nil // not a path (computed): its null is meant
	}
	return nil, pathExists(doc, path), nil
}

// pathExists reports whether doc has every member of path (object keys,
// array indexes).
func pathExists(doc any, path []any) bool {
	cur := doc
	for _, p := range path {
		switch x := cur.(type) {
		case map[string]any:
			k, ok := p.(string)
			if !ok {
				return false
			}
			if cur, ok = x[k]; !ok {
				return false
			}
		case []any:
			i, ok := p.(int)
			if !ok || i < -len(x) || i >= len(x) {
				return false
			}
			if i < 0 {
				i += len(x)
			}
			cur = x[i]
		default:
			return false
		}
	}
	return true
}

// appliedID is the id an item is recorded under in the applied table: its
// dedupe id, except for a content-hash id (a CRM that sends no delivery
// id), which gets the stream sequence too. A CRM retry inside the stream's
// duplicate window is still dropped by JetStream and a redelivery of the
// same message is still settled once, but a later update that happens to
// carry the same content as an earlier one (a status flipping back) is
// applied, not dropped as a duplicate forever.
func appliedID(id string, m *lane.Msg) string {
	if strings.HasPrefix(m.Header.Get(HeaderItemID), hashIDPrefix) {
		return id + "@" + strconv.FormatUint(m.StreamSeq, 10)
	}
	return id
}
