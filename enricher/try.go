package enricher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/envelope"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/topology"
)

// ErrTry wraps what stops one event in Try: the reason a lane would park
// it (invalid, unknown type, lookup missing, mapping error) or retry it
// (database error). The caller shows it and fixes the event or the catalog.
var ErrTry = errors.New("the enricher would not forward this event")

// Try runs one event through what a lane does with it — the type's schema
// and key, the lookups in deps.DB, the jq mapping — and returns the CRM
// request it would forward to the dispatcher. Nothing is published or
// stored. A required row that is missing fails at once (no
// lookup_grace). deps needs Catalog, DB and Dialect; the rest is unused.
func Try(ctx context.Context, cfg Config, deps Deps, env *envelope.Envelope) (crmreq.Request, error) {
	cfg = cfg.WithDefaults()
	types, err := compile(deps.Catalog, deps.Dialect)
	if err != nil {
		return crmreq.Request{}, err
	}
	if deps.Names.Partitions() == 0 {
		deps.Names = topology.New(topology.Config{}.WithDefaults())
	}
	deps.Ledger = nil
	s := &Service{cfg: cfg, deps: deps, log: zerolog.Nop(), types: types}
	e := *env
	if err := deps.Catalog.Prepare(&e); err != nil { // derives the key the subject carries
		return crmreq.Request{}, fmt.Errorf("%w: %w", ErrTry, err)
	}
	data, err := e.Marshal()
	if err != nil {
		return crmreq.Request{}, err
	}
	now := time.Now()
	m := &lane.Msg{Data: data, Type: e.Type, KeyToken: topology.KeyToken(e.Key), Stored: now,
		FirstSeen: now.Add(-cfg.LookupGrace - time.Second), Failures: 1, NumDelivered: 1}
	o := s.handle(ctx, m)
	if o.Kind != lane.KindForward || len(o.Out) != 1 {
		if o.Reason != "" {
			return crmreq.Request{}, fmt.Errorf("%w: %s: %w", ErrTry, o.Reason, o.Err)
		}
		return crmreq.Request{}, fmt.Errorf("%w: %w", ErrTry, o.Err)
	}
	var req crmreq.Request
	if err := json.Unmarshal(o.Out[0].Data, &req); err != nil {
		return crmreq.Request{}, err
	}
	return req, nil
}
