package enricher

import (
	"context"
	"errors"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// recordEnriched writes the ledger record of a forwarded event
// (Deps.Ledger with ledger.enriched) from the handler: the lane publishes
// the request meanwhile and waits for the record (the returned
// Outcome.Durable, nil when none is written) before it acks the event.
func (s *Service) recordEnriched(m *lane.Msg, id, key, out string, body []byte) func(context.Context) error {
	if !s.deps.Ledger.Wants(ledger.StepEnriched) {
		return nil
	}
	rec := ledger.FromMsg(ledger.StepEnriched, topology.StageEnricher, m, id)
	rec.Key, rec.AcceptedAt, rec.Out, rec.Body = key, m.Stored, out, body
	return s.deps.Ledger.Write(rec).Wait
}

// recordParks is the lanes' BeforeAck hook: the ledger record of each
// park, stored before the ack. Nil without a ledger.
func (s *Service) recordParks() func(lane.Observation) func(context.Context) error {
	return ledger.RecordParks(s.deps.Ledger, s.deps.Names, nil)
}

// deliverInline hands the mapped request to the outlet
// (dispatcher.inline) within the event's lane. With ledger.enriched the
// enriched record of a sent event is written too; the lane waits for it
// and the outlet's own record before it acks the event.
func (s *Service) deliverInline(ctx context.Context, m *lane.Msg, id, key string, req *crmreq.Request, body []byte) lane.Outcome {
	o := s.deps.Outlet.Deliver(ctx, m, *req)
	if o.Kind != lane.KindDone {
		return o
	}
	if rec := s.recordEnriched(m, id, key, "", body); rec != nil {
		if sent := o.Durable; sent != nil {
			o.Durable = func(ctx context.Context) error { return errors.Join(rec(ctx), sent(ctx)) }
		} else {
			o.Durable = rec
		}
	}
	return o
}
