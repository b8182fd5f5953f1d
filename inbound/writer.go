package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// Headers on stored and parked inbound messages.
const (
	HeaderSource     = "Sluice-Inbound-Source"
	HeaderItemID     = "Sluice-Inbound-Id"
	HeaderDelivery   = "Sluice-Inbound-Delivery"
	HeaderReceivedAt = "Sluice-Inbound-Received-At"
	// HeaderErrors on a parked item is the JSON list of every problem
	// ([{"field": ..., "reason": ...}]).
	HeaderErrors = "Sluice-Inbound-Errors"
)

// Invalid lists every validation problem of a stored item. It wraps
// ErrInvalid.
type Invalid struct{ Fields []FieldError }

func (e *Invalid) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Reason
	}
	return strings.Join(parts, "; ")
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *Invalid) Unwrap() error { return ErrInvalid }

// Validate checks an item of type typ against its schema and semantic
// checks that need no database (enum), and derives its entity key. It is
// what the writer does before any query, exported for tests and tools.
func (s *Service) Validate(typ string, raw []byte) (entity string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	return s.validate(ctx, typ, raw, "")
}

// validate is Validate with the envelope's entity key (key != "") in place
// of the type's key expression, and every jq expression bounded by ctx.
func (s *Service) validate(ctx context.Context, typ string, raw []byte, key string) (entity string, err error) {
	t, ok := s.types[typ]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return "", &Invalid{[]FieldError{{"item", "not valid JSON: " + err.Error()}}}
	}
	problems := t.validate(doc)
	if len(problems) == 0 {
		switch {
		case key != "":
			entity = key
		case t.key == nil:
			problems = append(problems, FieldError{"key", "no entity key: the type has no key and the source's envelope maps none"})
		default:
			if entity, err = t.entity(ctx, doc); err != nil {
				problems = append(problems, FieldError{"key", err.Error()})
			}
		}
	}
	for _, c := range t.checks {
		if c.enum == nil {
			continue
		}
		if fe := c.checkEnum(ctx, doc); fe != nil {
			problems = append(problems, *fe)
		}
	}
	if len(problems) > 0 {
		return "", &Invalid{problems}
	}
	return entity, nil
}

func (s *Service) handle(ctx context.Context, m *lane.Msg) lane.Outcome {
	id := m.Header.Get(nats.MsgIdHdr)
	if id == "" {
		return s.park("no webhook id", fmt.Errorf("%w: message has no %s", ErrInvalid, nats.MsgIdHdr), nil)
	}
	if m.Replayed() && (m.Type == unreadableType || m.KeyToken == unroutedKey) {
		return s.reroute(m) // the operator fixed the envelope or catalog and replays _unrouted
	}
	if m.Type == unreadableType {
		return s.parkUnreadable(m)
	}
	t := s.types[m.Type]
	// Every jq expression of the item runs within inbound.query_timeout: a
	// runaway expression is cut off and the item parked, instead of holding
	// the lane while its heartbeats make it look busy.
	jctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	entity, err := s.validate(jctx, m.Type, m.Data, m.Header.Get(HeaderKey))
	var inv *Invalid
	switch {
	case err != nil && ctx.Err() != nil:
		return lane.Retry(s.cfg.RetryMin, err) // the lane stops: cut short, not wrong
	case errors.As(err, &inv) && m.KeyToken == unroutedKey:
		return s.park("no entity key", err, inv.Fields)
	case errors.As(err, &inv):
		return s.parkItem(t, "invalid webhook", err, inv.Fields)
	case err != nil:
		return s.park("unknown type", err, nil)
	}
	if topology.KeyToken(entity) != m.KeyToken {
		return s.park("subject mismatch", fmt.Errorf("%w: key %q does not match subject token %q", ErrInvalid, entity, m.KeyToken), nil)
	}
	doc, _ := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data)) // valid: Validate parsed it
	var problems []FieldError
	for _, c := range t.checks {
		if c.Exists == nil {
			continue
		}
		fe, err := s.checkExists(ctx, jctx, c, doc)
		if err != nil {
			return s.retry(m, fmt.Errorf("check %s: %w", c.Name, err))
		}
		if fe != nil {
			problems = append(problems, *fe)
		}
	}
	if len(problems) > 0 {
		return s.parkItem(t, "invalid webhook", &Invalid{problems}, problems)
	}
	w, err := t.work(jctx, doc, m.Header.Values(HeaderVersion))
	if err != nil {
		return s.parkItem(t, "mapping failed", err, nil)
	}
	w.webhookID, w.entity = appliedID(id, m), entity
	w.receivedAt, _ = time.Parse(time.RFC3339Nano, m.Header.Get(HeaderReceivedAt))
	if w.receivedAt.IsZero() {
		w.receivedAt = m.Stored
	}
	outcome, err := s.store.apply(ctx, w)
	switch {
	case errors.Is(err, ErrRowMissing):
		return s.parkItem(t, "row missing", err, nil)
	case err != nil && isDataError(err):
		return s.parkItem(t, "rejected by database", fmt.Errorf("%w: %w", ErrRejected, err), nil)
	case err != nil:
		return s.retry(m, err)
	}
	s.count(outcome)
	s.log.Debug().Str("webhook_id", id).Str("type", m.Type).Str("entity", entity).Str("outcome", outcome).Msg("webhook settled")
	return lane.Done()
}

func (s *Service) park(reason string, err error, fields []FieldError) lane.Outcome {
	s.stats.parked.Add(1)
	h := nats.Header{}
	if len(fields) == 0 {
		fields = []FieldError{{"item", err.Error()}}
	}
	b, _ := json.Marshal(fields)
	h.Set(HeaderErrors, string(b))
	return lane.Park(reason, err, h)
}

// retry holds the lane: the database is unavailable (or locked). The
// delay doubles from retry_min to retry_max; the item is never parked.
func (s *Service) retry(m *lane.Msg, err error) lane.Outcome {
	s.stats.dbErrors.Add(1)
	d := s.RetryPolicy().Backoff(m.Failures)
	if m.Failures == 0 || m.Failures%10 == 0 {
		s.log.Warn().Err(err).Str("type", m.Type).Uint64("seq", m.StreamSeq).Int("failures", m.Failures).
			Dur("retry_in", d).Msg("database unavailable; holding the lane")
	}
	return lane.Retry(d, err)
}

// checkExists runs check c's expression within jctx and its query within
// query_timeout.
func (s *Service) checkExists(ctx, jctx context.Context, c compiledCheck, doc any) (*FieldError, error) {
	v, err := evalOne(jctx, c.value, doc)
	if err != nil {
		return &FieldError{"checks." + c.Name, err.Error()}, nil
	}
	if v == nil {
		if c.Optional {
			return nil, nil
		}
		return &FieldError{"checks." + c.Name, "value is null"}, nil
	}
	p, err := sqlValue(v)
	if err != nil {
		return &FieldError{"checks." + c.Name, err.Error()}, nil
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	ok, err := s.store.exists(qctx, *c.Exists, p)
	switch {
	case err != nil && isDataError(err):
		return &FieldError{"checks." + c.Name, "value not comparable with " + c.Exists.Table + "." + c.Exists.Column}, nil
	case err != nil:
		return nil, err
	case !ok:
		return &FieldError{"checks." + c.Name, fmt.Sprintf("no %s row with %s = %s", c.Exists.Table, c.Exists.Column, canonical(v))}, nil
	}
	return nil, nil
}

func (c compiledCheck) checkEnum(ctx context.Context, doc any) *FieldError {
	v, err := evalOne(ctx, c.value, doc)
	if err != nil {
		return &FieldError{"checks." + c.Name, err.Error()}
	}
	if v == nil && c.Optional {
		return nil
	}
	if !c.enum[canonical(v)] {
		return &FieldError{"checks." + c.Name, fmt.Sprintf("%s is not one of the allowed values", canonical(v))}
	}
	return nil
}

func (t *compiledType) validate(doc any) []FieldError {
	var out []FieldError
	for _, f := range catalog.SchemaErrors(t.schema.Validate(doc), "item") {
		out = append(out, FieldError{f.Field, f.Reason})
	}
	return out
}

func (t *compiledType) entity(ctx context.Context, doc any) (string, error) {
	v, err := evalOne(ctx, t.key, doc)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("key expression gave %s, want a string", canonical(v))
	}
	return s, topology.CheckKey(s)
}

// work evaluates the origin marker, version and column expressions.
// envVersion is the envelope's version of the item (Sluice-Inbound-Version,
// none when it maps none); it wins over the type's version expression.
func (t *compiledType) work(ctx context.Context, doc any, envVersion []string) (*work, error) {
	w := &work{typ: t, vals: map[string]any{}}
	if t.origin != nil {
		v, err := evalOne(ctx, t.origin, doc)
		if err != nil {
			return nil, fmt.Errorf("%w: origin: %w", ErrMapping, err)
		}
		w.origin = v != nil && v != false && v != ""
	}
	switch {
	case len(envVersion) > 0:
		w.version = envVersion[0]
	case t.version != nil:
		v, err := evalOne(ctx, t.version, doc)
		if err != nil {
			return nil, fmt.Errorf("%w: version: %w", ErrMapping, err)
		}
		switch x := v.(type) {
		case nil:
		case string:
			w.version = x
		case bool, map[string]any, []any:
			return nil, fmt.Errorf("%w: version is %s, want a number or a time", ErrMapping, canonical(v))
		default:
			w.version = canonical(x)
		}
		if len(w.version) > 100 {
			return nil, fmt.Errorf("%w: version must be at most 100 characters", ErrMapping)
		}
	}
	if w.version == "" && t.def.VersionPolicy == VersionRequire {
		return nil, fmt.Errorf("%w: version: required (version_policy: require) and the item has none", ErrMapping)
	}
	for _, c := range t.cols {
		v, present, err := t.column(ctx, c, doc)
		if err != nil {
			return nil, fmt.Errorf("%w: write.columns.%s: %w", ErrMapping, c, err)
		}
		if !present {
			continue
		}
		if w.vals[c], err = sqlValue(v); err != nil {
			return nil, fmt.Errorf("%w: write.columns.%s: %w", ErrMapping, c, err)
		}
		w.cols = append(w.cols, c)
	}
	for _, k := range t.def.Write.Key {
		if w.vals[k] == nil {
			return nil, fmt.Errorf("%w: key column %s is null or absent", ErrMapping, k)
		}
	}
	w.hash = contentHash(t.def.Write.Table, w.vals)
	return w, nil
}

// evalOne runs code on doc within ctx and returns its first output (null
// when none).
func evalOne(ctx context.Context, code *catalog.JQ, doc any) (any, error) {
	v, ok := code.First(ctx, doc, 0)
	if !ok {
		return nil, nil
	}
	if err, isErr := v.(error); isErr {
		return nil, err
	}
	return v, nil
}

// canonical is the JSON text of v (numbers of any Go type print alike).
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
