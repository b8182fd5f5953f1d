package dispatcher

import (
	"context"
	"strconv"
	"time"

	"sluice.dev/mesh/crmreq"
	"sluice.dev/mesh/lane"
	"sluice.dev/mesh/ledger"
	"sluice.dev/mesh/topology"
)

// recordDelivered writes the ledger record of a delivery (Deps.Ledger)
// right after the CRM's answer; the lane waits for it (the returned
// Outcome.Durable) just before it acks the message.
func (s *Service) recordDelivered(m *lane.Msg, r crmreq.Request, c *ledger.CRMCall, latency time.Duration) ledger.Pending {
	if s.deps.Ledger == nil {
		return ledger.Pending{}
	}
	rec := s.record(ledger.StepDelivered, m, r)
	c.Latency = latency
	rec.CRM = c
	return s.deps.Ledger.Write(rec)
}

// record starts a dispatcher record of m, carrying r. Inline (the
// enricher's lane), m is the event itself: no dispatch stream stored it.
func (s *Service) record(step ledger.Step, m *lane.Msg, r crmreq.Request) ledger.Record {
	rec := ledger.FromMsg(step, topology.StageDispatcher, m, r.EventID)
	rec.Key, rec.AcceptedAt = r.Key, r.AcceptedAt
	if s.inline {
		rec.Inline = true
	} else {
		rec.EnrichedAt = m.Stored
	}
	return rec
}

// recordParks is the lanes' BeforeAck hook: the ledger record of each
// park (with the CRM's status when it answered), stored before the ack.
// Nil without a ledger.
func (s *Service) recordParks() func(lane.Observation) func(context.Context) error {
	return ledger.RecordParks(s.deps.Ledger, s.deps.Names, func(rec *ledger.Record, o lane.Observation) {
		if st, err := strconv.Atoi(o.Outcome.Header.Get(HeaderCRMStatus)); err == nil {
			rec.CRM = &ledger.CRMCall{Status: st}
		}
	})
}
