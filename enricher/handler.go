package enricher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/itchyny/gojq"
	"github.com/nats-io/nats.go"

	"sluice.dev/mesh/catalog"
	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/productdb"
	"sluice.dev/mesh/topology"
)

// HeaderInvalidFields lists an invalid parked event's field problems,
// "field: reason; field: reason".
const HeaderInvalidFields = "Sluice-Invalid-Fields"

// Park reasons (the Sluice-Park-Reason header). Lookup reasons are
// followed by ": <lookup name>" or ": <table>/<key value>".
const (
	ReasonInvalid         = "invalid event"
	ReasonUnknownType     = "unknown event type"
	ReasonSubjectMismatch = "subject does not match envelope"
	ReasonKeyMissing      = "lookup key missing"
	ReasonKeyInvalid      = "lookup key invalid"
	ReasonRowMissing      = "lookup missing"
	ReasonMapping         = "mapping error"
)

func (s *Service) handle(ctx context.Context, m *lane.Msg) lane.Outcome {
	env, err := envelope.Decode(m.Data)
	var in any
	if err == nil {
		// Validates and decodes the data once; the key expression runs
		// within query_timeout like every jq of the event.
		jctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
		in, err = s.deps.Catalog.PrepareJQContext(jctx, env)
		cancel()
	}
	if err != nil && ctx.Err() != nil {
		return lane.Retry(s.cfg.RetryMin, err) // stopping: cut short, not wrong
	}
	if err != nil {
		if catalog.IsUnknownType(err) {
			return lane.Park(ReasonUnknownType, err, nil)
		}
		return lane.Park(ReasonInvalid, err, invalidHeader(err))
	}
	if env.Type != m.Type || topology.KeyToken(env.Key) != m.KeyToken {
		return lane.Park(ReasonSubjectMismatch, fmt.Errorf("%w: subject has type %q and key token %q, envelope has type %q and key token %q",
			ErrSubjectMismatch, m.Type, m.KeyToken, env.Type, topology.KeyToken(env.Key)), nil)
	}
	mp := s.types[env.Type]
	if mp == nil { // the catalog knows it, so New compiled it; be safe anyway
		return lane.Park(ReasonUnknownType, catalog.ErrUnknownType, nil)
	}

	rows := make(map[string]any, len(mp.lookups))
	for _, lk := range mp.lookups {
		row, o, ok := s.lookup(ctx, m, lk, in)
		if !ok {
			return o
		}
		rows[lk.def.Name] = row
	}

	body := []byte(env.Data)
	if mp.body != nil {
		v, err := s.jq(ctx, mp.body, map[string]any{"event": in, "lookups": rows})
		if err == nil {
			body, err = gojq.Marshal(v)
		}
		if err != nil {
			return s.mappingFailed(ctx, "body", err)
		}
	}
	idKey := env.Key
	if mp.idKey != nil {
		v, err := s.jq(ctx, mp.idKey, in)
		if err == nil {
			idKey, err = idKeyString(v)
		}
		if err != nil {
			return s.mappingFailed(ctx, "crm.id_key", err)
		}
	}

	t := mp.target
	req := crmreq.Request{
		EventID: env.ID, Type: env.Type, Key: env.Key, OccurredAt: env.OccurredAt, AcceptedAt: m.Stored,
		Object: t.Object, IDKey: idKey, Mode: t.Mode, Method: t.Method, Path: t.Path,
		UpdateMethod: t.UpdateMethod, UpdatePath: t.UpdatePath, IDFrom: t.IDFrom, Body: body,
		ConflictIDFrom: t.ConflictIDFrom,
	}
	if mp.find != nil {
		f, err := s.buildFind(ctx, mp, in, rows, body)
		if err != nil {
			return s.mappingFailed(ctx, "crm.find", err)
		}
		req.Find = f
	}
	if s.deps.Outlet != nil {
		return s.deliverInline(ctx, m, env.ID, env.Key, &req, body)
	}
	b, err := encodeRequest(&req)
	if err != nil { // the body is valid JSON from gojq.Marshal; cannot happen
		return s.mappingFailed(ctx, "request", err)
	}
	out := nats.NewMsg(s.deps.Names.DispatchSubject(m.Partition, env.Type, m.KeyToken))
	out.Data = b
	out.Header.Set(nats.MsgIdHdr, env.ID)
	o := lane.Forward(out)
	o.Durable = s.recordEnriched(m, env.ID, env.Key, out.Subject, body)
	return o
}

// mappingFailed parks on a jq error, or retries when the lane is stopping
// (the expression was cut short, not wrong).
func (s *Service) mappingFailed(ctx context.Context, what string, err error) lane.Outcome {
	if ctx.Err() != nil {
		return lane.Retry(s.cfg.RetryMin, err)
	}
	return lane.Park(ReasonMapping+": "+what+": "+err.Error(), fmt.Errorf("%w: %s: %w", ErrMapping, what, err), nil)
}

// jq runs code on in (catalog.JQ.First) within query_timeout, so a
// runaway expression cannot hold the lane forever. A jq error, a halt or no
// output at all is an error; a cancelled or timed-out ctx is too.
func (s *Service) jq(ctx context.Context, code *catalog.JQ, in any) (any, error) {
	v, ok := code.First(ctx, in, s.cfg.QueryTimeout)
	if !ok {
		return nil, errNoOutput
	}
	if err, ok := v.(error); ok {
		var he *gojq.HaltError
		if errors.As(err, &he) && he.Value() == nil {
			return nil, errNoOutput
		}
		return nil, err
	}
	return v, nil
}

var errNoOutput = errors.New("expression gave no value")

// lookup resolves one lookup of the event; ok false means stop with o.
func (s *Service) lookup(ctx context.Context, m *lane.Msg, lk *lookup, in any) (row any, o lane.Outcome, ok bool) {
	v, err := s.jq(ctx, lk.from, in)
	if errors.Is(err, errNoOutput) {
		v, err = nil, nil
	}
	if err != nil {
		return nil, s.mappingFailed(ctx, "lookup "+lk.def.Name+" from", err), false
	}
	key, err := productdb.KeyParam(v)
	if err != nil {
		return nil, lane.Park(ReasonKeyInvalid+": "+lk.def.Name, err, nil), false
	}
	if key == nil {
		if lk.def.Optional {
			return nil, lane.Outcome{}, true
		}
		return nil, lane.Park(ReasonKeyMissing+": "+lk.def.Name, fmt.Errorf("%s.from gave null", lk.key), nil), false
	}
	r, found, err := s.fetch(ctx, lk, key)
	switch {
	case err != nil && productdb.IsDataError(err) && ctx.Err() == nil:
		return nil, lane.Park(ReasonKeyInvalid+": "+lk.def.Name, err, nil), false
	case err != nil:
		if m.Failures == 0 || m.Failures%20 == 0 {
			s.log.Warn().Err(err).Str("lookup", lk.key).Int("failures", m.Failures).
				Uint64("seq", m.StreamSeq).Msg("product database query failed; holding the lane")
		}
		return nil, lane.Retry(s.RetryPolicy().Backoff(m.Failures), fmt.Errorf("lookup %s: %w", lk.def.Name, err)), false
	case found:
		return r, lane.Outcome{}, true
	case lk.def.Optional:
		return nil, lane.Outcome{}, true
	}
	what := lk.def.Table + "/" + productdb.KeyString(key)
	waited := time.Since(m.FirstSeen)
	if waited < s.cfg.LookupGrace {
		if m.Failures == 0 {
			s.log.Info().Str("lookup", lk.key).Str("row", what).Uint64("seq", m.StreamSeq).
				Dur("grace", s.cfg.LookupGrace).Msg("referenced row missing; holding the lane while it may still arrive")
		}
		d := min(s.RetryPolicy().Backoff(m.Failures), s.cfg.LookupGrace-waited+time.Millisecond)
		return nil, lane.Retry(d, fmt.Errorf("%w: %s (waiting %s of %s)", ErrRowMissing, what,
			waited.Round(time.Millisecond), s.cfg.LookupGrace)), false
	}
	return nil, lane.Park(ReasonRowMissing+": "+what, fmt.Errorf("%w: %s after %s", ErrRowMissing, what,
		waited.Round(time.Millisecond)), nil), false
}

func idKeyString(v any) (string, error) {
	var k string
	switch x := v.(type) {
	case string:
		k = x
	case nil:
		return "", errors.New("gave null")
	default:
		n, err := productdb.KeyParam(x)
		if err != nil || n == nil {
			return "", fmt.Errorf("gave a %s, want a string", gojq.TypeOf(v))
		}
		k = productdb.KeyString(n)
	}
	if err := topology.CheckKey(k); err != nil {
		return "", err
	}
	return k, nil
}

// invalidHeader lists an *envelope.Invalid's fields for the parked message.
func invalidHeader(err error) nats.Header {
	var inv *envelope.Invalid
	if !errors.As(err, &inv) {
		return nil
	}
	parts := make([]string, 0, len(inv.Fields))
	for _, f := range inv.Fields {
		parts = append(parts, f.Error())
	}
	v := strings.Join(parts, "; ")
	v = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, v)
	if len(v) > 2048 {
		v = strings.ToValidUTF8(v[:2048], "") + "…"
	}
	return nats.Header{HeaderInvalidFields: []string{v}}
}
